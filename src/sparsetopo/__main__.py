from sparsetopo.cli import main

raise SystemExit(main())
