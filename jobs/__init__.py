"""Records of periodic job runs; public runs (tenant purge) and per-tenant runs alike."""
