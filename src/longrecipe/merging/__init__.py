"""Model merging (``longrecipe-merge``): linear (the paper's λ1·θ_orig + λ2·θ_tuned), SLERP,
task arithmetic and TIES, streamed tensor by tensor over safetensors shards."""

from longrecipe.merging.merge import MergeSpec, build_spec, check_compatible, merge_from_config, merge_models

__all__ = ["MergeSpec", "build_spec", "check_compatible", "merge_from_config", "merge_models"]
