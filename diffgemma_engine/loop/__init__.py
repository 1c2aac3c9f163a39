"""The request path: the shared engine's service and worker, the numbered step, scheduling, one request's
state, the model runner, the sampler, the prefix cache, settling a denoised block, and detokenizing.
This is the part of the engine that imports torch."""
