"""`python -m trainer ...`"""

import gc
import sys

from trainer.cli import main

code = main()
# Everything left is freed by the process's exit: without the cycle collector walking every object PyTorch and
# gymnasium created first, a worker or learner stops about 0.4 CPU s sooner.
gc.freeze()
sys.exit(code)
