"""`python -m appliance` is the same as the `acopio` command."""

from appliance.cli import main

raise SystemExit(main())
