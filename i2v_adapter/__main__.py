from i2v_adapter.cli import main
raise SystemExit(main())
