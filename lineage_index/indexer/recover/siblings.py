"""Star or chain: a fine-tune hung under a sibling moves up unless it carries that sibling's update.

Fine-tunes of one parent made with similar data or recipes have correlated updates, so a
sibling can sit nearer than the parent and a minimum arborescence chains them (P -> s1 -> s2)
where the truth is a star (P -> s1, P -> s2). Nearness cannot tell the two apart; containment
can (``verify.containment``): in a chain g -> p -> c the child's update from g carries p's,
kappa = <c - g, p - g> / |p - g|^2 = 1 + <e, d>/|d|^2, about 1; for siblings kappa = rho |d'|/|d|,
below 1 unless the later sibling both correlates with and outgrows the other. Siblings made
with one recipe share a common update component (weight decay, the same data), so rho is often
0.8-0.95 and kappa alone passes them as a chain; where other descendants of g exist they serve
as references (``verify.partial_containment``): beta_p, p's share in a joint fit of c's update,
is ~1 for a chain and <= 0.5 for siblings, and the chain stands only at ``PARTIAL_CONTAINED``.

Each fine-tune edge p -> c whose parent p is itself a fine-tune of g is judged, top-down, so a
model that moves is judged again under its new parent:

* kappa >= ``CONTAINED`` (beta_p >= ``PARTIAL_CONTAINED`` with references): c carries at least that share of p's update: the chain stands.
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

from lineage_index.indexer.recover.verify import (
    PairFeatures,
    compare,
    containment,
    partial_containment,
)
from lineage_index.records import ModelRecord, Sketch

CONTAINED = 0.9
# With references (other descendants of g outside p's and c's subtrees) the test is beta_p of
# ``verify.partial_containment``: ~1 for a chain whatever the references, <= 1/(k+1) <= 0.5 for
# siblings with k sibling references; the chain stands above the midpoint of the two.
PARTIAL_CONTAINED = 0.75
NOT_CONTAINED = 0.5
MAX_PASSES = 3  # passes over a family until no model moves
MAX_REFS = 8  # references per judged triple (cost: one least-squares fit per matrix)
AMBIGUOUS_CONFIDENCE = 0.5
MOVED_CONFIDENCE = 0.6  # a star drawn from containment alone


def _ancestors(node: str, parent_of: Mapping[str, str]) -> list[str]:
    out, seen = [], {node}
    while node in parent_of and parent_of[node] not in seen:
        node = parent_of[node]
        seen.add(node)
        out.append(node)
    return out


def children_of(parent_of: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c, p in parent_of.items():
        out.setdefault(p, []).append(c)
    return out


def _subtree(node: str, children: Mapping[str, list[str]]) -> set[str]:
    out, todo = {node}, [node]
    while todo:
        for k in children.get(todo.pop(), ()):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _references(g: str, p: str, c: str, parent_of: Mapping[str, str], children: Mapping[str, list[str]],
                rel: Mapping[tuple[str, str], str], by_id: Mapping[str, Sketch], fixed: set[str]) -> list[str]:
    """Other models of the tree that cannot carry c's own update: outside c's subtree, not
    merges or structural children (a merge or a copy may hold it). Models under p are kept:
    p's other children carry p's update plus their own, which leaves beta_p at 1 in a chain;
    near copies of p are dropped by ``partial_containment`` itself."""
    top = g
    while top in parent_of:
        top = parent_of[top]
    banned = _subtree(c, children) | {g, p}
    out = [m for m in sorted(_subtree(top, children) - banned)
           if m in by_id and m not in fixed and rel.get((parent_of.get(m, ""), m), "finetune") == "finetune"]
    return out[:MAX_REFS]


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
    original = dict(parent_of)
    rel = dict(relation_of)
    notes: dict[str, str] = {}
    caps: dict[str, float] = {}
    move_caps: dict[str, float] = {}  # the confidence a move itself allows, kept across passes
    for _ in range(MAX_PASSES):  # a move frees references for models judged before it
        caps = {}
        moved = _one_pass(parent_of, rel, by_id, records, feats, fixed, pair_features, caps, notes)
        move_caps.update({c: caps[c] for c in notes if c in caps})
        if not moved:
            break
    notes = {c: n for c, n in notes.items() if parent_of.get(c) != original.get(c)}
    for c in notes:
        caps[c] = min(caps.get(c, 1.0), move_caps.get(c, 1.0))
    return [(p, c) for c, p in parent_of.items()], caps, notes


def _one_pass(
    parent_of: dict[str, str], rel: dict[tuple[str, str], str], by_id: Mapping[str, Sketch],
    records: Mapping[str, ModelRecord], feats: dict[frozenset[str], PairFeatures], fixed: set[str],
    pair_features: Callable[[Sketch, Sketch], PairFeatures], caps: dict[str, float], notes: dict[str, str],
) -> bool:
    """Judge every fine-tune under a fine-tune once, top-down; True when a model moved."""
    moved = False
    children = children_of(parent_of)
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
    for c in order:
        for _ in range(len(order)):  # a moved model is judged again under its new parent
            p = parent_of.get(c)
            g = parent_of.get(p) if p is not None else None
            if rel.get((p, c)) != "finetune":
                break
            if g is not None and p in fixed and rel.get((g, p)) == "copy":
                p, g = g, parent_of.get(g)  # under a copy: judged against the copy's source
            if (g is None or c in fixed or p in fixed
                    or rel.get((g, p), "finetune") != "finetune" or not {g, p, c} <= by_id.keys()):
                break
            refs = _references(g, p, c, parent_of, children_of(parent_of), rel, by_id, fixed)
            k = partial_containment(by_id[g], by_id[p], by_id[c], [by_id[r] for r in refs])
            high = PARTIAL_CONTAINED
            if k is None:
                k, high = containment(by_id[g], by_id[p], by_id[c]), CONTAINED
            if k is None or k[0] >= high:
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
            moved = True
            rel[(target, c)] = "finetune"
            why = "the card names it" if above else "the weights say so"
            notes[c] = (f"star, not chain: carries {kappa:.2f} of {p}'s own update (< {high}); "
                        f"hung under {target}: {why}")
            caps[c] = min(caps.get(c, 1.0), 1.0 if above else MOVED_CONFIDENCE)
            if above:
                break
    return moved
