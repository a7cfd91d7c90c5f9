"""Record while training in someone else's loop: Hugging Face and Lightning callbacks.

Nothing here is imported by ``import traj``; each framework module imports its framework,
so ``traj.integrations.huggingface`` needs ``traj[hf]`` and ``traj.integrations.lightning``
needs ``traj[lightning]``. :class:`~traj.integrations.distributed.DistributedRecorder`, the
part both callbacks share, needs only torch and also serves a plain loop under DDP or FSDP.
"""
