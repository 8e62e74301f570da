"""DeepSpeed-Ulysses sequence parallelism for simulated long position indices.

``sp`` ranks share one sample: each keeps a contiguous shard of the sequence (``sharding``), the
attention all-to-all of DeepSpeed's ``UlyssesSPAttentionHF`` gathers the full sequence per head
group (``ulysses``, registered through ``transformers.AttentionInterface``), and the loss is reduced
token-weighted over the group (``loss``). ``tiling`` holds the ALST-style memory switches.
"""

from longrecipe.parallel.groups import (
    SequenceParallelLayout,
    current_sequence_parallel,
    init_sequence_parallel,
    reset_sequence_parallel,
)
from longrecipe.parallel.loss import sequence_parallel_loss, token_loss_sum
from longrecipe.parallel.sharding import pad_to_multiple, shard_batch, shift_labels
from longrecipe.parallel.ulysses import (
    ULYSSES_ATTN,
    check_sequence_parallel_heads,
    disable_ulysses,
    enable_ulysses,
)

__all__ = [
    "ULYSSES_ATTN",
    "SequenceParallelLayout",
    "check_sequence_parallel_heads",
    "current_sequence_parallel",
    "disable_ulysses",
    "enable_ulysses",
    "init_sequence_parallel",
    "pad_to_multiple",
    "reset_sequence_parallel",
    "sequence_parallel_loss",
    "shard_batch",
    "shift_labels",
    "token_loss_sum",
]
