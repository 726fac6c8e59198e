"""Model zoo with known lineage: really trained tiny models in Hugging Face Hub layout + truth.json.

Stages, one module each: ``archs`` (tiny transformers architectures and HF state dicts),
``data`` (synthetic Markov-chain tasks), ``training`` (CPU training loops), ``derive``
(training-free derivations: casts, int8, pruning masks, merges, PEFT layout), ``names``,
``recipes`` (zoo sizes as data), ``plan`` (which models, derived how), ``cards`` (messy card
metadata and licence truth), ``writing`` (Hub layout on disk) and ``build`` (orchestration).
The zoo is test and benchmark data for the rest of lineage-index; the indexer must not import it.
"""

from lineage_index.zoo.build import ZooSummary, build_zoo
from lineage_index.zoo.plan import plan_zoo
from lineage_index.zoo.recipes import RECIPES

SIZES: tuple[str, ...] = tuple(RECIPES)

__all__ = ["SIZES", "ZooSummary", "build_zoo", "plan_zoo"]
