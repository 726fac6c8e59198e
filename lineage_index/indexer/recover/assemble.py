"""Assemble verified pairs into directed, typed lineage per family.

Order of decisions (most certain first, as TensorLock argues): structural children
(copies, quantised, pruned: the child carries the signature) -> merges (least-squares
fit over the nearest relatives) -> a minimum spanning arborescence (Chu-Liu/Edmonds) over
the remaining related pairs, with direction penalties from upload time (when the family's
reference votes, pooled with the collection's, say the times are trustworthy: ``time_votes``),
norm growth, declared base models and kurtosis -> a fine-tune hung under a sibling moves up
unless it carries that sibling's update (``siblings``). Unrelated components of one family stay
separate trees: an arc exists only between verified related models. Declared edges are then reconciled (both / declared /
contradicted). No I/O here.
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import networkx as nx

from lineage_index.indexer.recover.siblings import star_or_chain
from lineage_index.indexer.recover.structure import requant_violations
from lineage_index.indexer.recover.verify import (
    MergeFit,
    PairFeatures,
    find_merge,
    sparse_merge_fit,
)
from lineage_index.records import Edge, ModelRecord, Sketch

LAMBDA = 0.3  # direction penalty scale, in units of the mean related distance (MoTHer's lambda)
# Weights of the direction votes. Norm growth was right on every fine-tune edge of the
# generated zoos; kurtosis (MoTHer) on about two in three, so it only breaks ties.
W_TIME, W_NORM, W_DECLARED, W_KURT = 3.0, 2.5, 2.0, 0.5
# A card chain (c declares b, b declares a) makes a an ancestor of c: half a direct declaration.
W_DECLARED_ANCESTOR = 1.0
DECLARED_DEPTH = 6
TIME_TRUST_MIN = 0.7  # creation times are ignored in a family where they agree less with the weights
TIME_MIN_S = 60.0  # creation times closer than this say nothing about direction
# Upload times are a property of the collection (the Hub's are reliable, a re-dated mirror's are
# not): a family's own votes are pooled with the collection's share, worth this many votes.
TIME_PRIOR_VOTES = 4.0
MERGE_NEIGHBOURS = 8
COPY_PARENT_PENALTY = 1e-3  # tie-break, in units of the mean related distance
TIE_EPS = 1e-9  # last-resort tie-break (see assemble_family), far below any real difference
# A quantised child's source rounds to it with ~0 violations (container rounding at a step's
# edge only); candidates within this many (or this share of the best count) stay candidates.
REQUANT_TIE, REQUANT_TIE_SHARE = 2, 0.1


MergeScreen = Callable[[list[tuple[str, list[str]]]], set[str]]
Arborescence = Callable[[nx.DiGraph], list[tuple[str, str]]]


@dataclass(frozen=True)
class FamilyResult:
    edges: list[Edge]
    roots: list[str]


def upload_time(rec: ModelRecord | None) -> datetime | None:
    if rec is None or not rec.created_at:
        return None
    try:
        return datetime.fromisoformat(rec.created_at.replace("Z", "+00:00"))
    except ValueError:
        return None


def time_vote(parent: str, child: str, records: dict[str, ModelRecord]) -> float:
    tp, tc = upload_time(records.get(parent)), upload_time(records.get(child))
    if tp is None or tc is None:
        return 0.0
    gap = (tc - tp).total_seconds()
    return math.copysign(1.0, gap) if abs(gap) >= TIME_MIN_S else 0.0


def _weight_vote(f: PairFeatures, parent: str) -> float:
    growth = f.norm_growth if f.a == parent else -f.norm_growth
    return max(-1.0, min(1.0, growth))


def time_trust(related: list[PairFeatures], records: dict[str, ModelRecord], skip: set[str]) -> float:
    """Share of reference pairs where upload time agrees with a direction that is not time's
    (``time_votes``); 1.0 when there is nothing to compare."""
    agree, total = time_votes(related, records, skip)
    return agree / total if total else 1.0


def time_votes(related: list[PairFeatures], records: dict[str, ModelRecord], skip: set[str]) -> tuple[int, int]:
    """(agreeing, all) reference pairs where upload time votes on a direction that is not time's.

    The references, one vote per pair, most certain first: a structural child (quantised,
    pruned, rounded copy) and its own nearest relative (the model it was made from; a
    sibling's time says nothing, so only the child's side counts); a declared base model and
    the model declaring it, where the weights relate them (a wrong card names the wrong
    ancestor far more often than a descendant); each model's nearest relative by norm growth
    (not for pairs touching ``skip``: merges bias it, nor structural children). Hub upload
    times are reliable; a collection with re-dated or arbitrary times is not.
    """
    structural_of: dict[str, str] = {}  # structural child -> its own nearest relative
    best: dict[str, float] = {}
    nearest: dict[str, tuple[float, PairFeatures]] = {}
    by_pair: dict[frozenset[str], PairFeatures] = {}
    for f in related:
        by_pair[frozenset((f.a, f.b))] = f
        child = f.quant_child or f.prune_child or (f.copy_child if f.copy_child != "same" else None)
        if child is not None and (child not in best or f.dist < best[child]):
            best[child] = f.dist
            structural_of[child] = f.b if child == f.a else f.a
        for m in (f.a, f.b):
            if f.copy_child != "same" and (m not in nearest or f.dist < nearest[m][0]):
                nearest[m] = (f.dist, f)
    votes: dict[frozenset[str], tuple[str, str]] = {}  # pair -> (older, newer) by the reference
    for child, parent in structural_of.items():
        votes.setdefault(frozenset((child, parent)), (parent, child))
    for m, rec in records.items():
        for b in rec.base_models:
            if frozenset((m, b)) in by_pair:
                votes.setdefault(frozenset((m, b)), (b, m))
    for _, f in nearest.values():
        key = frozenset((f.a, f.b))
        if key in votes or f.a in skip or f.b in skip or f.a in best or f.b in best:
            continue
        wv = _weight_vote(f, f.a)
        if abs(wv) >= 0.5:
            votes[key] = (f.a, f.b) if wv > 0 else (f.b, f.a)
    agree = total = 0
    for older, newer in votes.values():
        tv = time_vote(older, newer, records)
        if tv != 0.0:
            total += 1
            agree += tv > 0
    return agree, total


def collection_time_share(families: list[list[PairFeatures]], records: dict[str, ModelRecord]) -> float | None:
    """Share of agreeing upload-time votes over every family's related pairs (``time_votes``,
    merges not excluded: norm growth votes about them are a little biased); None without votes."""
    agree = total = 0
    for pairs in families:
        a, t = time_votes([f for f in pairs if f.related], records, set())
        agree, total = agree + a, total + t
    return agree / total if total else None


def declared_ancestors(model: str, records: Mapping[str, ModelRecord], depth: int = DECLARED_DEPTH) -> set[str]:
    """Models the cards name as ``model``'s base, its base's base, ... (``depth`` steps)."""
    out: set[str] = set()
    frontier = [model]
    for _ in range(depth):
        nxt = []
        for m in frontier:
            rec = records.get(m)
            for b in (rec.base_models if rec is not None else ()):
                if b not in out and b != model:
                    out.add(b)
                    nxt.append(b)
        frontier = nxt
    return out


def direction_score(
    f: PairFeatures, parent: str, child: str, records: dict[str, ModelRecord], use_time: bool = True,
    use_norm: bool = True,
) -> float:
    """Weighted votes that ``parent`` -> ``child`` is the right direction (> 0 agrees)."""
    score = W_NORM * _weight_vote(f, parent) if use_norm else 0.0
    if use_time:
        score += W_TIME * time_vote(parent, child, records)
    rc, rp = records.get(child), records.get(parent)
    if rc is not None and parent in rc.base_models:
        score += W_DECLARED
    elif parent in declared_ancestors(child, records):
        score += W_DECLARED_ANCESTOR
    if rp is not None and child in rp.base_models:
        score -= W_DECLARED
    elif child in declared_ancestors(parent, records):
        score -= W_DECLARED_ANCESTOR
    kp, kc = (f.kurt_a, f.kurt_b) if f.a == parent else (f.kurt_b, f.kurt_a)
    if abs(kp - kc) > 1e-6:
        score += W_KURT * math.copysign(1.0, kp - kc)
    return score


def _forced_child(
    f: PairFeatures, records: dict[str, ModelRecord], cited: dict[str, int] | None = None
) -> tuple[str | None, str | None]:
    """(child id, relation) when the pair carries a structural signature.

    A bit-identical copy carries none: the newer upload is the copy (by creation time, then
    by which card declares the other); with neither, the model more often named as a base by
    other cards is taken as the original (then the smaller id), so that the twins act as one
    node and the tree is built on originals; that copy edge's direction is a guess.
    """
    fmt_a, fmt_b = (getattr(records.get(m), "weight_format", None) for m in (f.a, f.b))
    if (f.quant_child or f.copy_child) and (fmt_a in CONVERTED_FORMATS) != (fmt_b in CONVERTED_FORMATS):
        # a GGUF conversion is made from a full-precision original, never the reverse,
        # whatever the upload dates (the values alone cannot tell BF16 from its F16 copy)
        return (f.a if fmt_a in CONVERTED_FORMATS else f.b), ("quantized" if f.quant_child else "copy")
    if f.quant_child:
        return f.quant_child, "quantized"
    if f.copy_child == "same":
        ta, tb = upload_time(records.get(f.a)), upload_time(records.get(f.b))
        if ta is not None and tb is not None and ta != tb:
            return (f.b if tb > ta else f.a), "copy"
        ra, rb = records.get(f.a), records.get(f.b)
        if ra is not None and f.b in ra.base_models:
            return f.a, "copy"
        if rb is not None and f.a in rb.base_models:
            return f.b, "copy"
        if cited is None:
            return None, None
        original = min((f.a, f.b), key=lambda m: (-cited.get(m, 0), m))
        return (f.b if original == f.a else f.a), "copy"
    if f.copy_child:
        return f.copy_child, "copy"
    if f.prune_child:
        return f.prune_child, "prune"
    return None, None


CONVERTED_FORMATS = frozenset({"gguf"})  # formats made from another model's weights, never made into one


def _requant_parents(
    related: list[PairFeatures], forced: dict[frozenset[str], tuple[str | None, str | None]],
    by_id: dict[str, Sketch],
) -> dict[str, set[str]]:
    """Quantised child -> the candidate parents whose values its grid rounds (fewest
    ``requant_violations``). Nearness cannot choose here: a light fine-tune's siblings differ
    from it by far less than a 4-bit step, and a pruned relative compared on its kept weights
    looks nearer still; the rounding test tells the source from them (0 against 16+ on the
    real MiniLM's light fine-tunes)."""
    cands: dict[str, list[str]] = {}
    for f in related:
        child, rel = forced[frozenset((f.a, f.b))]
        if rel == "quantized" and child is not None:
            cands.setdefault(child, []).append(f.b if child == f.a else f.a)
    out: dict[str, set[str]] = {}
    for c, ps in cands.items():
        if len(ps) < 2:
            continue
        v = {p: requant_violations(by_id[p], by_id[c]) for p in ps}
        known = {p: n for p, n in v.items() if n is not None}
        if known:
            best = min(known.values())
            out[c] = {p for p, n in known.items() if n <= best + max(REQUANT_TIE, REQUANT_TIE_SHARE * best)}
    return out


def _confidence(f: PairFeatures, dir_score: float, forced: bool) -> float:
    p_related = 1.0 - math.exp(-max(0.0, f.z - 4.0) / 4.0)
    p_dir = 0.97 if forced else 0.5 + 0.45 * math.tanh(abs(dir_score) / 3.0)
    return round(max(0.0, min(p_related, p_dir)), 4)


def _find_merges(
    by_id: dict[str, Sketch], neighbours: dict[str, list[tuple[float, str]]], forced_child: set[str],
    records: dict[str, ModelRecord], screen: MergeScreen | None = None,
) -> dict[str, MergeFit]:
    """Models explained by several relatives at once (``verify.find_merge``).

    ``screen`` (optional) gets every (model, candidates) at once and returns the models that may
    be merges (a necessary condition, e.g. ``vectorised.merge_screen``); the others are skipped.
    """
    merges: dict[str, MergeFit] = {}
    queries = []
    for m in by_id:
        if m in forced_child or len(neighbours[m]) < 2:
            continue
        # quantised / copied / pruned children duplicate their parent: never merge inputs here
        queries.append((m, [x for _, x in sorted(neighbours[m]) if x not in forced_child][:MERGE_NEIGHBOURS]))
    allowed = screen(queries) if screen is not None else None
    for m, near in queries:
        if allowed is not None and m not in allowed:
            continue
        fit = find_merge(by_id[m], [by_id[x] for x in near])
        if fit is None:
            # a TIES/DARE merge is noisy: its base (the inputs' parent) may not be among its own
            # nearest models, but is among its nearest inputs' nearest
            hop = [x for y in near[:2] for x in [x for _, x in sorted(neighbours[y])
                                                 if x != m and x not in near and x not in forced_child][:2]]
            if hop:
                fit = sparse_merge_fit(by_id[m], [by_id[x] for x in near + list(dict.fromkeys(hop))])
        if fit is None:
            continue
        tm = upload_time(records.get(m))
        if tm is not None and any((tp := upload_time(records.get(p))) and tp > tm for p in fit.parents):
            continue  # a "merge" older than one of its parents is a parent, not a merge
        merges[m] = fit
    return merges


def _inside_merges(
    related: list[PairFeatures], merges: dict[str, tuple[list[str], list[float]]], merge_like: set[str],
    forced: dict[frozenset[str], tuple[str | None, str | None]],
) -> dict[str, set[str]]:
    """For each merge (and each copy of it): the models on the tree paths between its inputs.

    A merge of two models of one tree contains every model on the path between them, and is
    closer to those than their own parents are; they are its ancestors or cousins, never its
    children. Paths are taken in the minimum spanning tree of the models that are not merges.
    """
    mst_graph = nx.Graph()
    for f in related:
        if f.a not in merge_like and f.b not in merge_like:
            mst_graph.add_edge(f.a, f.b, weight=f.dist)
    tree = nx.minimum_spanning_tree(mst_graph) if mst_graph.number_of_nodes() else mst_graph
    out: dict[str, set[str]] = {}
    for m, fit in merges.items():
        parents = fit.parents
        nodes: set[str] = set(parents) | ({fit.base} if fit.base else set())  # the base is an ancestor
        for i, a in enumerate(parents):
            for b in parents[i + 1:]:
                if a in tree and b in tree and nx.has_path(tree, a, b):
                    nodes.update(nx.shortest_path(tree, a, b))
        out[m] = nodes
    for k, (c, _) in forced.items():  # copies of a merge inherit its inside set
        if c is not None:
            for m in (set(k) - {c}) & set(merges):
                out.setdefault(c, set()).update(out[m])
    return out


def assemble_family(
    sketches: list[Sketch], pairs: list[PairFeatures], records: dict[str, ModelRecord],
    *, merge_screen: MergeScreen | None = None, arborescence: Arborescence | None = None,
    time_prior: float | None = None,
) -> FamilyResult:
    """Directed typed edges for one family from its verified candidate pairs.

    ``time_prior``: the share of the whole collection's reference pairs on which upload time
    agrees (``collection_time_share``); a family's own votes are pooled with it, so that a
    small family of a re-dated collection does not trust its times by chance, nor a small
    family of the Hub distrust them on one odd vote. Without it the family's votes decide.

    At hub scale (``recover.batch``) ``merge_screen`` skips the merge fit for models that
    cannot be merges and ``arborescence`` (``indexer.arborescence.arborescence_edges``) replaces
    networkx's, which copies its graph at every contraction; the result is the same.
    """
    by_id = {s.model_id: s for s in sketches}
    related = [f for f in pairs if f.related]
    feats = {frozenset((f.a, f.b)): f for f in related}
    neighbours: dict[str, list[tuple[float, str]]] = {m: [] for m in by_id}
    for f in related:
        neighbours[f.a].append((f.dist, f.b))
        neighbours[f.b].append((f.dist, f.a))
    mean_d = sum(f.dist for f in related) / len(related) if related else 1.0

    def trusted(skip: set[str]) -> bool:
        agree, total = time_votes(related, records, skip)
        if time_prior is not None:
            return (agree + TIME_PRIOR_VOTES * time_prior) / (total + TIME_PRIOR_VOTES) >= TIME_TRUST_MIN
        return (agree / total if total else 1.0) >= TIME_TRUST_MIN

    prelim = trusted(set())
    if not prelim:  # untrusted times are no times: not for copies, merges nor direction (members only)
        records = ChainMap({m: replace(records[m], created_at=None) for m in by_id if m in records}, records)
    cited: dict[str, int] = {}
    for r in records.values():
        for b in r.base_models:
            cited[b] = cited.get(b, 0) + 1
    forced = {frozenset((f.a, f.b)): _forced_child(f, records, cited) for f in related}
    guessed = {c for k, (c, _) in forced.items() if c is not None and feats[k].copy_child == "same"
               and _forced_child(feats[k], records) == (None, None)}
    forced_child: set[str] = {c for c, _ in forced.values() if c is not None}
    requant = _requant_parents(related, forced, by_id)
    merges = _find_merges(by_id, neighbours, forced_child, records, merge_screen)
    # merges (and their copies) have smaller norms than their inputs: norm growth is biased there
    merge_like = set(merges) | {c for k, (c, _) in forced.items() if c is not None and (set(k) - {c}) & set(merges)}
    use_time = trusted(merge_like) if merge_like else prelim  # again without the merges, which bias norm growth
    inside = _inside_merges(related, merges, merge_like, forced)

    g = nx.DiGraph()
    g.add_nodes_from(by_id)
    relation_of: dict[tuple[str, str], str] = {}
    score_of: dict[tuple[str, str], float] = {}
    for f in related:
        child, rel = forced[frozenset((f.a, f.b))]
        for p, c in ((f.a, f.b), (f.b, f.a)):
            if child is not None and c != child:
                continue
            if child is None and c in forced_child:
                continue  # a structural child hangs only under a model its signature points to
            if p in merge_like and c in inside.get(p, ()):
                continue  # a merge does not parent the models it was made from
            if rel == "quantized" and c == child and c in requant and p not in requant[c]:
                continue  # a quantised child hangs under the model whose values it rounds
            if child is None and by_id[p].quant and not by_id[c].quant:
                continue  # quantised codes (beyond their rounding error of it) parent no full-precision model
            s = direction_score(f, p, c, records, use_time, use_norm=p not in merge_like)
            rel_pc = "copy" if f.copy_child == "same" else (rel or "finetune")
            penalty = 0.0 if child is not None else LAMBDA * mean_d * max(0.0, -s)
            if p in forced_child:  # between identical candidates prefer the original to its copy
                penalty += COPY_PARENT_PENALTY * mean_d
            rc, rp = records.get(c), records.get(p)
            if rc is not None and rc.base_models and p not in rc.base_models:
                penalty += COPY_PARENT_PENALTY * mean_d  # between equally near parents the card decides
            if rp is not None and c in rp.base_models:
                penalty += COPY_PARENT_PENALTY * mean_d  # and between two directions whose votes cancel
            # exact ties would leave the arborescence to networkx's set order (the hash seed):
            # a vanishing, fixed preference for the alphabetically first parent makes it one answer
            penalty += TIE_EPS * mean_d * (p > c)
            g.add_edge(p, c, weight=f.dist + penalty)
            relation_of[(p, c)] = rel_pc
            score_of[(p, c)] = s

    for m, fit in merges.items():
        parents, weights = fit.parents, fit.weights
        for u in list(g.predecessors(m)):
            g.remove_edge(u, m)
        for p in parents:
            if g.has_edge(m, p):
                g.remove_edge(m, p)
        # hang the merge under its main parent at no cost; replaced by all merge edges below
        main = parents[weights.index(max(weights))]
        g.add_edge(main, m, weight=0.0)

    edges: list[Edge] = []
    roots: list[str] = []
    tree: list[tuple[str, str]] = []
    for comp in nx.weakly_connected_components(g):
        sub = g.subgraph(comp).copy()
        big = 10.0 * (1.0 + sum(d["weight"] for _, _, d in sub.edges(data=True)))
        sub.add_node("__root__")
        for v in comp:
            sub.add_edge("__root__", v, weight=big)
        tree_edges = (arborescence(sub) if arborescence is not None else
                      nx.minimum_spanning_arborescence(sub, attr="weight", preserve_attrs=True).edges())
        for p, c in tree_edges:
            if p == "__root__":
                roots.append(c)
            elif c not in merges:
                tree.append((p, c))
    # siblings chained by nearness: a fine-tune stays under a sibling only if it carries its update
    tree, caps, notes = star_or_chain(sorted(tree), relation_of, by_id, records, feats,
                                      forced_child | set(merges) | merge_like)
    for p, c in sorted(tree, key=lambda e: (e[1], e[0])):
        f = feats[frozenset((p, c))]
        rel = relation_of.get((p, c), "finetune")
        s = score_of[(p, c)] if (p, c) in score_of else direction_score(f, p, c, records, use_time)
        conf = _confidence(f, s, rel in ("quantized", "copy", "prune") and c not in guessed)
        evidence = _evidence(f, rel) + (f"; {notes[c]}" if c in notes else "")
        edges.append(Edge(c, p, rel, "recovered", min(conf, caps.get(c, 1.0)), round(max(0.0, f.cos_median), 4),
                          evidence=evidence))
    for m, fit in merges.items():
        base = f", base {fit.base}" if fit.base else ""
        for p, w in zip(fit.parents, fit.weights, strict=True):
            f = feats.get(frozenset((p, m)))
            closeness = round(max(0.0, f.cos_median), 4) if f else None
            edges.append(Edge(m, p, "merge", "recovered", 0.9, closeness,
                              evidence=f"{fit.method} merge, weight {w:.2f}, residual {fit.ratio:.3f}{base}"))
    return FamilyResult(edges, roots)


def _evidence(f: PairFeatures, rel: str) -> str:
    bits = [f"cos={f.cos_median:.3f}", f"z={f.z:.0f}"]
    if f.identical_share:
        bits.append(f"identical={f.identical_share:.2f}")
    if f.low_rank_share:
        bits.append(f"lowrank={f.low_rank_share:.2f}")
    if rel == "prune":
        bits.append(f"zeros={max(f.zero_a, f.zero_b):.2f}")
    return f"{rel}: " + " ".join(bits)
