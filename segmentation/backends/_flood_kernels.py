"""numba kernels of :mod:`hpacell.segmentation.backends.flood` (imported only when numba is installed).

scikit-image's flood, step for step: a binary heap ordered by ``(level, age)``,
seeds pushed in raster order with age 0, the root popped by moving the last
element to the top and sifting it down (left child first on equal keys), a pixel
labelled when pushed (no lines) or when popped (lines). Keys are packed into
64-bit integers; the comparisons are those of scikit-image's, so equal keys
leave the heap in the same order.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)


@_jit
def sift_up(heap, items, x, ib):
    """Push ``x`` into ``heap[:items]``: moved up while its key is strictly smaller than its parent's."""
    kx = x >> ib
    c = items
    while c > 0:
        parent = (c + 1) // 2 - 1
        y = heap[parent]
        if kx < (y >> ib):
            heap[c] = y
            c = parent
        else:
            break
    heap[c] = x


@_jit
def pop(heap, items, ib):
    """Remove the root (returned) as scikit-image does: last element to the root, sifted down."""
    top = heap[0]
    items -= 1
    if items > 0:
        x = heap[items]
        kx = x >> ib
        i = 0
        while True:
            left = 2 * i + 1
            if left >= items:
                break
            best, kb = i, kx
            kl = heap[left] >> ib
            if kl < kb:
                best, kb = left, kl
            right = left + 1
            if right < items and (heap[right] >> ib) < kb:
                best = right
            if best == i:
                break
            heap[i] = heap[best]
            i = best
        heap[i] = x
    return top


@_jit
def flood_plain(level, mask, out, offsets, heap, ib):
    """No watershed lines: one word per element, ``level << 2ib | age << ib | pixel``; ``heap``
    holds every mask pixel (each is pushed once at most)."""
    n = out.shape[0]
    pix = (np.int64(1) << ib) - 1
    shift = 2 * ib
    items = 0
    for p in range(n):  # seeds in raster order, age 0
        if out[p] != 0:
            sift_up(heap, items, ((np.int64(level[p]) + 1) << shift) | p, ib)
            items += 1
    age = 1
    while items > 0:
        top = pop(heap, items, ib)
        items -= 1
        p = top & pix
        reached = top >> shift
        label = out[p]
        for j in range(offsets.shape[0]):
            q = p + offsets[j]
            if mask[q] == 0 or out[q] != 0:
                continue
            age += 1
            out[q] = label
            lq = np.int64(level[q]) + 1
            if lq < reached:
                lq = reached
            sift_up(heap, items, (lq << shift) | (np.int64(age) << ib) | q, ib)
            items += 1
    return items


@_jit
def sift_up_pair(keys, load, items, k, v):
    """:func:`sift_up` for a heap of keys ``keys`` with payloads ``load`` beside them."""
    c = items
    while c > 0:
        parent = (c + 1) // 2 - 1
        if k < keys[parent]:
            keys[c] = keys[parent]
            load[c] = load[parent]
            c = parent
        else:
            break
    keys[c] = k
    load[c] = v


@_jit
def flood_lines(level, mask, out, offsets, keys, load):
    """With watershed lines: keys ``level << 40 | age``, payloads ``pixel << 32 | source``.

    The heap lives in ``keys`` / ``load``; returns -1 when they are full (the
    caller retries with larger ones), else 0.
    """
    n = out.shape[0]
    cap = keys.shape[0]
    items = 0
    for p in range(n):  # seeds in raster order, age 0
        if out[p] != 0:
            if items == cap:
                return -1
            sift_up_pair(keys, load, items, (np.int64(level[p]) + 1) << 40, (np.int64(p) << 32) | p)
            items += 1
    age = 1
    while items > 0:
        top_k = keys[0]
        top_v = load[0]
        items -= 1
        if items > 0:
            k = keys[items]
            v = load[items]
            i = 0
            while True:
                left = 2 * i + 1
                if left >= items:
                    break
                best, kb = i, k
                if keys[left] < kb:
                    best, kb = left, keys[left]
                right = left + 1
                if right < items and keys[right] < kb:
                    best = right
                if best == i:
                    break
                keys[i] = keys[best]
                load[i] = load[best]
                i = best
            keys[i] = k
            load[i] = v
        p = top_v >> 32
        src = top_v & 0xFFFFFFFF
        if out[p] != 0 and p != src:
            continue  # reached before from another neighbour
        label = out[src]
        line = mask[p] == 0
        if not line:
            for j in range(offsets.shape[0]):
                q = p + offsets[j]
                if mask[q] != 0 and out[q] != 0 and out[q] != label:
                    line = True
                    break
        if line:
            mask[p] = 0
        else:
            out[p] = label
        for j in range(offsets.shape[0]):
            q = p + offsets[j]
            if mask[q] == 0 or out[q] != 0:
                continue
            if items == cap:
                return -1
            age += 1
            lq = np.int64(level[q]) + 1
            if lq < (top_k >> 40):
                lq = top_k >> 40
            sift_up_pair(keys, load, items, (lq << 40) | age, (np.int64(q) << 32) | src)
            items += 1
    return 0
