#!/bin/sh
# Assemble man/devloc.1 from tools/devloc1-parts/*.mdoc (one part per command group, so each
# subsystem's text lives next to the others without one giant file).
set -eu
cd "$(dirname "$0")/.."
cat tools/devloc1-parts/*.mdoc > man/devloc.1
