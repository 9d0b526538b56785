"""python -m ckptfs: the ckptfs command."""

from ckptfs._cli import main

raise SystemExit(main())
