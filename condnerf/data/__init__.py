"""Host-side datasets (numpy only): loaders, procedural scene, ray sampler."""
