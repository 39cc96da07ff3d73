"""The supervision console (``condpay console``): a read-only web page for a central bank or an
auditor, over the public gRPC API and the SDK only (README.md, "The supervision console").

- :mod:`.cli`: the command; checks the identity and the web libraries before anything starts;
- :mod:`.views`: what each page shows, read through ``client.api`` with the console's identity;
- :mod:`.charts`: inline SVG charts;
- :mod:`.app`: the Starlette application and its Jinja2 templates (``templates/``).

Starlette, Jinja2 and uvicorn are the ``condpay[sim]`` extra: only :mod:`.app` and the
command's serving step import them, so ``condpay console`` without them says so in one line.
"""

from sim_central_bank.console.cli import main

__all__ = ["main"]
