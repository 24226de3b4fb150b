"`python -m prx_nb ...` is the `prx-nb` command; `accelerate launch -m prx_nb train ...` runs it on every process."
import os
import sys

from prx_nb.cli import main

if __name__ == "__main__":
    rc = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torch.distributed can abort at interpreter exit after the work;
        sys.stdout.flush()  # the process group is already destroyed by end_training
        sys.stderr.flush()
        os._exit(rc)
    raise SystemExit(rc)
