from minigemma.tools.cli import main

raise SystemExit(main())
