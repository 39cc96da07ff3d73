"""DvP/PvP coordination: drives each settlement through the two-phase protocol across the core's
ledger and the bridge (coordinator.py), over a retrying bridge link (bridge_link.py), and a
recovery sweep that finishes whatever a crash left in flight (recovery.py)."""
