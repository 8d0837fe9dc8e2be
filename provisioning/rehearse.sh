#!/usr/bin/env bash
# The production rehearsal on one Linux machine (provisioning/README.md, section 10):
#   distributed provisioning of provisioning/project.yml, one network namespace per participant (the server reached
#   by its FQDN), nvflare preflight-check and each kit's own startup/start.sh, a FedGIN job submitted with a lead's
#   kit, every attack of the threat model (section 11), a server crash and the documented resume.
# Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), iproute2, and fedgin-flare installed (./install.sh).
# Arguments go to `fedgin rehearse` (--workdir, --data-root, --project, --rounds); about 8 min on 2 CPU cores.
# Exit code 0 only if every step did what it should; the evidence of each is in <workdir>/rehearsal.json.
set -euo pipefail
if ! command -v fedgin >/dev/null; then
  echo "rehearse.sh: fedgin is not installed in this Python environment (run ./install.sh first)" >&2
  exit 2
fi
exec fedgin rehearse "$@"
