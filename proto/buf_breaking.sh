#!/bin/sh
# `buf breaking` for proto/ (working tree, uncommitted edits included) against a base commit;
# `make lint` runs it. Usage: proto/buf_breaking.sh BUF [BASE]. BASE (or $BUF_AGAINST) is any
# git revision; without one, the base is:
#   - on a branch: where it forked from main (git merge-base HEAD origin/main, or HEAD main when
#     there is no origin), so every proto change the branch would merge is checked, however many
#     commits it has;
#   - on main itself (the merge base is HEAD: a CI clone of main, where HEAD *is* main): HEAD~1,
#     the commit this one changed. Comparing main with itself would check nothing.
# Needs the history (a shallow clone has no merge base nor HEAD~1): CI clones with full depth, or
# fetches the base, or passes it. Without one this fails rather than skip the check silently.
set -eu
buf=$1
cd "$(dirname "$0")/.."

base=${2:-${BUF_AGAINST:-}}
if [ -z "$base" ]; then
    main=$(git rev-parse --verify --quiet origin/main || git rev-parse --verify --quiet main || true)
    if [ -z "$main" ]; then
        echo "buf_breaking.sh: no origin/main nor main to compare with; pass a base (BUF_AGAINST=<rev>)" >&2
        exit 2
    fi
    base=$(git merge-base HEAD "$main" || true)
    if [ -z "$base" ] || [ "$base" = "$(git rev-parse HEAD)" ]; then
        base=$(git rev-parse --verify --quiet 'HEAD~1^{commit}' || true)
    fi
    if [ -z "$base" ]; then
        echo "buf_breaking.sh: no base commit (a shallow clone?); fetch the history or set BUF_AGAINST" >&2
        exit 2
    fi
fi

# The base's protos from git (git archive: what was committed there, nothing else). A base from
# before proto/third_party existed cannot compile on its own (google/rpc/status.proto was not on
# buf's path then): it gets today's vendored copy and buf.yaml, which change none of its files.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" proto | tar -x -C "$tmp"
if [ ! -d "$tmp/proto/third_party" ]; then
    cp -R proto/third_party "$tmp/proto/third_party"
    cp proto/buf.yaml "$tmp/proto/buf.yaml"
fi
echo "buf breaking proto --against $(git rev-parse --short "$base") (proto/buf_breaking.sh)"
"$buf" breaking proto --against "$tmp/proto"
