"""Store tests (a package, so its helpers import as store.store_support everywhere)."""
