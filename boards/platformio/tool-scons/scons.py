# PlatformIO runs `python scons.py ...` from its tool-scons package. This one hands over to the
# SCons installed from PyPI in the same Python environment (scons==4.11.1, pinned with
# platformio==6.2.0, which requires tool-scons ~4.41101.0).
import sys

import SCons.Script

if __name__ == "__main__":
    sys.exit(SCons.Script.main())
