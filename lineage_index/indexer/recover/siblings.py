"""Star or chain: a fine-tune hung under a sibling moves up unless it carries that sibling's update.

Fine-tunes of one parent made with similar data or recipes have correlated updates, so a
sibling can sit nearer than the parent and a minimum arborescence chains them (P -> s1 -> s2)
where the truth is a star (P -> s1, P -> s2). Nearness cannot tell the two apart; containment
can (``verify.containment``): in a chain g -> p -> c the child's update from g carries p's,
kappa = <c - g, p - g> / |p - g|^2 = 1 + <e, d>/|d|^2, about 1; for siblings kappa = rho |d'|/|d|,
below 1 unless the later sibling both correlates with and outgrows the other.

Each fine-tune edge p -> c whose parent p is itself a fine-tune of g is judged, top-down, so a
model that moves is judged again under its new parent:

* kappa >= ``CONTAINED``: c carries at least that share of p's update: the chain stands.
* otherwise the card decides: c declaring an ancestor of p moves c under it; c declaring p keeps
  the chain.
* otherwise kappa <= ``NOT_CONTAINED``: a child would have undone over half of its parent's own
  update, which fine-tuning on a new task does not do (continued training on other data moved
  the zoo's real chains by 13-26% of it); c moves under g.
* in between the weights cannot tell a star from a chain: the chain stands, with confidence at
  most ``AMBIGUOUS_CONFIDENCE``.

Only plain fine-tune edges are judged: structural children (copies, quantised, pruned), merges
and their inputs keep the edges their signatures gave. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lineage_index.indexer.recover.verify import PairFeatures, compare, containment
from lineage_index.records import ModelRecord, Sketch

CONTAINED = 0.9
NOT_CONTAINED = 0.5
AMBIGUOUS_CONFIDENCE = 0.5
MOVED_CONFIDENCE = 0.6  # a star drawn from containment alone


def _ancestors(node: str, parent_of: Mapping[str, str]) -> list[str]:
    out, seen = [], {node}
    while node in parent_of and parent_of[node] not in seen:
        node = parent_of[node]
        seen.add(node)
        out.append(node)
    return out


def star_or_chain(
    tree: list[tuple[str, str]], relation_of: Mapping[tuple[str, str], str], by_id: Mapping[str, Sketch],
    records: Mapping[str, ModelRecord], feats: dict[frozenset[str], PairFeatures], fixed: set[str],
    pair_features: Callable[[Sketch, Sketch], PairFeatures] = compare,
) -> tuple[list[tuple[str, str]], dict[str, float], dict[str, str]]:
    """(tree edges after the rule, confidence caps per child, evidence notes per moved child).

    ``tree``: (parent, child) edges of one family's arborescence; ``fixed``: models whose edge
    must not move (structural children, merges and their copies). New pairs are compared with
    ``pair_features`` and added to ``feats``.
    """
    parent_of = {c: p for p, c in tree}
    rel = dict(relation_of)
    children: dict[str, list[str]] = {}
    for p, c in tree:
        children.setdefault(p, []).append(c)
    roots = [p for p in children if p not in parent_of]
    order: list[str] = []
    todo = sorted(roots)
    while todo:  # breadth first: parents are settled before their children are judged
        nxt = []
        for n in todo:
            kids = sorted(children.get(n, ()))
            order.extend(kids)
            nxt.extend(kids)
        todo = nxt
    caps: dict[str, float] = {}
    notes: dict[str, str] = {}
    for c in order:
        for _ in range(len(order)):  # a moved model is judged again under its new parent
            p = parent_of.get(c)
            g = parent_of.get(p) if p is not None else None
            if (g is None or c in fixed or p in fixed or rel.get((p, c)) != "finetune"
                    or rel.get((g, p), "finetune") != "finetune" or not {g, p, c} <= by_id.keys()):
                break
            k = containment(by_id[g], by_id[p], by_id[c])
            if k is None or k[0] >= CONTAINED:
                break
            kappa = k[0]
            rec = records.get(c)
            declared = set(rec.base_models) if rec is not None else set()
            if p in declared:
                caps[c] = min(caps.get(c, 1.0), AMBIGUOUS_CONFIDENCE if kappa > NOT_CONTAINED else MOVED_CONFIDENCE)
                break
            above = [a for a in _ancestors(p, parent_of) if a in declared]
            target = above[0] if above else (g if kappa <= NOT_CONTAINED else None)
            if target is None:
                caps[c] = min(caps.get(c, 1.0), AMBIGUOUS_CONFIDENCE)
                break
            key = frozenset((target, c))
            if key not in feats:
                feats[key] = pair_features(by_id[target], by_id[c])
            if not feats[key].related:
                break
            parent_of[c] = target
            rel[(target, c)] = "finetune"
            why = "the card names it" if above else "the weights say so"
            notes[c] = (f"star, not chain: carries {kappa:.2f} of {p}'s update (kappa < {CONTAINED}); "
                        f"hung under {target}: {why}")
            caps[c] = min(caps.get(c, 1.0), 1.0 if above else MOVED_CONFIDENCE)
            if above:
                break
    return [(p, c) for c, p in parent_of.items()], caps, notes
