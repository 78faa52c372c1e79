"""carbon-sink: land-cover maps -> per-site carbon stocks and sinks (docs/architecture.md)."""
