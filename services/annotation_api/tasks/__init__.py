"""Tasks: listing (keyset or page), one-task CRUD, and the bulk SQL behind them."""
