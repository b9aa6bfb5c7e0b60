"""Weight files by name: safe reading, the adapter's formats, layer naming, IP-Adapter weights, the cache."""
