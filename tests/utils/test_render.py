"""Pictures: the HPA colour composite, cell outlines, side-by-side panels."""

from __future__ import annotations

import numpy as np

from hpacell.utils.render import composite, draw_outlines, side_by_side


def test_composite_maps_channels_as_hpa_shows_them():
    image = np.zeros((4, 8, 8), np.uint8)  # red, green, blue, yellow; levels read every 4th pixel
    image[0, 0, 0] = 200  # red only
    image[1, 0, 4] = 50  # green, dim: stretched to its own bright level
    image[2, 4, 0] = 255  # blue
    image[3, 4, 4] = 100  # yellow = half into red and green
    rgb = composite(image, gamma=1.0, percentile=100)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 4].tolist() == [0, 255, 0]
    assert rgb[4, 0].tolist() == [0, 0, 255]
    assert rgb[4, 4].tolist() == [127, 127, 0]
    assert rgb.astype(bool).any(-1).sum() == 4  # black stays black
    assert composite(np.zeros((4, 4, 4), np.uint16)).max() == 0  # an empty image does not divide by 0


def test_outlines_mark_the_inner_border_only():
    rgb = np.zeros((10, 10, 3), np.uint8)
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 2:8] = 1
    out = draw_outlines(rgb, labels, color=(0, 255, 0))
    edge = (out == [0, 255, 0]).all(-1)
    assert edge[2, 2:8].all() and edge[7, 2:8].all() and edge[2:8, 2].all()  # the cell's own rim
    assert not edge[3:7, 3:7].any() and not edge[labels == 0].any()
    assert not rgb.any()  # the input is not drawn on
    thick = (draw_outlines(rgb, labels, thickness=2) == 255).all(-1)
    assert thick.sum() > edge.sum() and thick[3, 3:7].all() and not thick[4:6, 4:6].any()


def test_side_by_side_resizes_to_the_first_height_and_pads():
    a = np.full((20, 30, 3), 10, np.uint8)
    b = np.full((10, 10, 3), 200, np.uint8)
    out = side_by_side(a, b, pad=4)
    assert out.shape == (20, 30 + 4 + 20, 3)
    assert (out[:, 30:34] == 0).all() and (out[:, 34:] == 200).all()
