"""Host-side datasets (numpy only): loaders, the procedural scene and the ray sampler."""
