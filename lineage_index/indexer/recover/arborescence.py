"""Minimum spanning arborescence (Chu-Liu/Edmonds) in O(E log V), for families of any size.

``networkx.minimum_spanning_arborescence`` copies its multigraph at every contraction; on a
family of tens of thousands of models that takes minutes. This is the contraction algorithm as
Tarjan (1977) made it fast: every node keeps its in-edges in a leftist heap with a lazy weight
offset; walking from a node along the cheapest in-edges either reaches a finished node or closes
a cycle, which is contracted into a new node (its members' heaps melded, each re-weighted by the
in-edge it would give up, as in Edmonds 1967). Once every node is finished, the chosen edges are
expanded from the outermost contraction inwards: the member a contraction's chosen edge enters
takes that edge, the others keep their cycle edge. Heaps start as chains of each node's in-edges
sorted by (weight, edge number), so ties go to the lower edge number and the result is
deterministic. ``arborescence_edges`` takes the networkx graph ``assemble`` builds (with its
virtual root) and returns the tree's edges. No I/O here.
"""

from __future__ import annotations

import numpy as np

_NIL = -1


class _Heaps:
    """Leftist heaps of edges (key, lazy offset), stored in flat lists."""

    def __init__(self, keys: np.ndarray) -> None:
        self.key = keys.astype(np.float64).tolist()
        self.lazy = [0.0] * len(self.key)
        self.left = [_NIL] * len(self.key)
        self.right = [_NIL] * len(self.key)
        self.rank = [1] * len(self.key)

    def _push(self, a: int) -> None:
        lz = self.lazy[a]
        if lz:
            for c in (self.left[a], self.right[a]):
                if c != _NIL:
                    self.key[c] += lz
                    self.lazy[c] += lz
            self.lazy[a] = 0.0

    def meld(self, a: int, b: int) -> int:
        if a == _NIL:
            return b
        if b == _NIL:
            return a
        key, left, right, rank = self.key, self.left, self.right, self.rank
        if (key[b], b) < (key[a], a):
            a, b = b, a
        self._push(a)
        right[a] = self.meld(right[a], b)
        lr = rank[left[a]] if left[a] != _NIL else 0
        rr = rank[right[a]] if right[a] != _NIL else 0
        if lr < rr:
            left[a], right[a] = right[a], left[a]
            lr, rr = rr, lr
        rank[a] = rr + 1
        return a

    def pop(self, a: int) -> int:
        self._push(a)
        return self.meld(self.left[a], self.right[a])

    def add(self, a: int, delta: float) -> None:
        if a != _NIL:
            self.key[a] += delta
            self.lazy[a] += delta


def min_arborescence(n: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, root: int) -> np.ndarray:
    """Parent edge (index into src/dst/weight) of every node of a minimum arborescence rooted at ``root``.

    Every node must be reachable from ``root``; ``-1`` for the root.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    m = len(src)
    heaps = _Heaps(weight)
    # each node's in-edges as a chain sorted by (weight, edge number): a valid leftist heap
    order = np.lexsort((np.arange(m), weight, dst))
    head = [_NIL] * (2 * n)
    if m:
        sd = dst[order]
        starts = np.ones(m, dtype=bool)
        starts[1:] = sd[1:] != sd[:-1]
        nxt = np.full(m, _NIL, dtype=np.int64)
        nxt[order[:-1]] = np.where(starts[1:], _NIL, order[1:])
        heaps.left = nxt.tolist()
        for v, e in zip(sd[starts].tolist(), order[starts].tolist(), strict=True):
            head[v] = e
    src_l = src.tolist()
    union = list(range(2 * n))  # node -> the contraction it was merged into (itself at the top)

    def find(x: int) -> int:
        r = x
        while union[r] != r:
            r = union[r]
        while union[x] != r:
            union[x], x = r, union[x]
        return r

    chosen = [_NIL] * (2 * n)  # in-edge chosen for each node, original or contraction
    members: list[list[int]] = []  # members of contraction n + i
    state = [0] * (2 * n)  # 0 new, 1 on the current walk, 2 finished
    state[root] = 2
    next_id = n
    for start in range(n):
        if state[start]:
            continue
        path: list[int] = []
        u = start
        while state[u] != 2:
            if state[u] == 0:
                state[u] = 1
                path.append(u)
            h = head[u]
            while h != _NIL and find(src_l[h]) == u:  # edges from inside a contraction are loops now
                h = heaps.pop(h)
            if h == _NIL:
                raise ValueError("some node is not reachable from the root")
            e = h
            head[u] = heaps.pop(h)
            heaps.add(head[u], -heaps.key[e])  # the others now cost what they save over e
            chosen[u] = e
            x = find(src_l[e])
            if state[x] != 1:
                u = x
                continue
            cyc = [path.pop()]  # x is on this walk: contract the cycle x -> ... -> u
            while cyc[-1] != x:
                cyc.append(path.pop())
            c = next_id
            next_id += 1
            members.append(cyc)
            merged = _NIL
            for v in cyc:
                union[v] = c
                merged = heaps.meld(merged, head[v])
            head[c] = merged
            state[c] = 1
            path.append(c)
            u = c
        for v in path:
            state[v] = 2
    # expand from the outermost contraction inwards
    final = chosen[:]
    parent_of = [_NIL] * (2 * n)
    for i, cyc in enumerate(members):
        for v in cyc:
            parent_of[v] = n + i
    dst_l = dst.tolist()
    for i in range(len(members) - 1, -1, -1):
        c = n + i
        e = final[c]
        v = dst_l[e] if e != _NIL else _NIL
        while v != _NIL and parent_of[v] != c:  # climb from the edge's head to c's direct member
            v = parent_of[v]
        for w in members[i]:
            final[w] = e if w == v else chosen[w]
    out = np.asarray(final[:n], dtype=np.int64)
    out[root] = _NIL
    return out


def arborescence_edges(graph, root: str = "__root__") -> list[tuple[str, str]]:
    """(parent, child) edges of a minimum spanning arborescence of a networkx DiGraph (attr ``weight``)."""
    nodes = list(graph.nodes())
    pos = {v: i for i, v in enumerate(nodes)}
    data = list(graph.edges(data="weight"))
    src = np.fromiter((pos[u] for u, _, _ in data), dtype=np.int64, count=len(data))
    dst = np.fromiter((pos[v] for _, v, _ in data), dtype=np.int64, count=len(data))
    w = np.fromiter((x for _, _, x in data), dtype=np.float64, count=len(data))
    chosen = min_arborescence(len(nodes), src, dst, w, pos[root])
    return [(nodes[int(src[e])], nodes[v]) for v, e in enumerate(chosen.tolist()) if e >= 0]
