"""Runflow's hosted SAM 3: ``client`` (the only module that speaks HTTP to Runflow),
``engine`` (sending runs, looking up results), ``callbacks`` (the per-run callback URL, its
checks, and the view that receives deliveries), ``parse`` (Runflow's run objects and callback
payloads, and its status words), ``output`` (where the masks are in an output), ``urls``."""
