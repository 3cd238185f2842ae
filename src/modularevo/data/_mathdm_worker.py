"""Worker process for :func:`modularevo.data._mathdm.generate_in_subprocess` (internal)."""

import sys

from modularevo.data._mathdm import write_problems

if __name__ == "__main__":
    write_problems(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5])
