"""FLARE adapters: the only part of fedgin that imports nvflare."""
