"""Federation: the FLARE adapters (Executor, checked aggregator, persistor, model selection, privacy filter,
outgoing audit, site policy, provisioning builder, job builder, simulator and POC runners). The only part of
fedgin that imports nvflare.

May import ``fedgin.common``, ``data``, ``augment`` and ``engine``; never a later stage.
"""
