"""Matplotlib figures the notebooks share: digit grids, label histograms, mean images, metric curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np

from helpers._checks import check_int, check_labels
from helpers.data import NUM_CLASSES


def plot_digit_grid(pixels: np.ndarray, labels: np.ndarray, num_columns: int = 10,
                    title: str | None = None, max_digits: int = 40) -> plt.Figure:
    """Show up to `max_digits` digits (EMNIST convention: 1.0 = white background) with their labels."""
    check_int('num_columns', num_columns, minimum=1, example=10)
    check_int('max_digits', max_digits, minimum=1, example=40)
    if len(labels) < min(len(pixels), max_digits):
        raise ValueError(f'labels must have one label per digit shown, got {len(labels)} labels for '
                         f'{len(pixels)} digits.')
    count = min(len(pixels), max_digits)
    if count == 0:
        raise ValueError('No digits to show: pixels is empty.')
    num_rows = int(np.ceil(count / num_columns))
    figure, axes = plt.subplots(num_rows, num_columns, figsize=(num_columns * 0.9, num_rows * 1.05),
                                squeeze=False)
    for position, axis in enumerate(axes.flat):
        axis.axis('off')
        if position < count:
            axis.imshow(pixels[position], cmap='gray', vmin=0.0, vmax=1.0)
            axis.set_title(str(int(labels[position])), fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_label_histograms(labels_by_client: Mapping[str, np.ndarray], num_columns: int = 4,
                          num_classes: int = NUM_CLASSES, sharey: bool = False) -> plt.Figure:
    """Draw one bar chart of label counts per client."""
    if not isinstance(labels_by_client, Mapping):
        raise TypeError('labels_by_client must map client ids to label arrays, e.g. {"writer_000": labels}, '
                        f'got {type(labels_by_client).__name__}.')
    if not labels_by_client:
        raise ValueError('labels_by_client is empty: pass at least one client.')
    check_int('num_columns', num_columns, minimum=1, example=4)
    num_classes = check_int('num_classes', num_classes, minimum=1, example=NUM_CLASSES)
    labels_by_client = {client_id: check_labels(f'labels of client {client_id!r}', labels, num_classes,
                                                allow_empty=True)
                        for client_id, labels in labels_by_client.items()}
    num_rows = int(np.ceil(len(labels_by_client) / num_columns))
    figure, axes = plt.subplots(num_rows, num_columns, figsize=(num_columns * 3, num_rows * 2.2),
                                squeeze=False, sharex=True, sharey=sharey)
    for axis in axes.flat:
        axis.set_visible(False)
    for axis, (client_id, labels) in zip(axes.flat, labels_by_client.items()):
        axis.set_visible(True)
        axis.bar(range(num_classes), np.bincount(np.asarray(labels), minlength=num_classes))
        axis.set_title(f'{client_id} ({len(labels)} digits)', fontsize=9)
        axis.set_xticks(range(num_classes))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.supxlabel('label')
    figure.supylabel('number of digits')
    figure.tight_layout()
    return figure


def plot_mean_images(mean_images: Mapping[str, np.ndarray], num_classes: int = NUM_CLASSES
                     ) -> plt.Figure:
    """Draw, per client (rows), the mean image of each label (columns); blank where it has none."""
    if not isinstance(mean_images, Mapping):
        raise TypeError('mean_images must map client ids to mean_image_per_label arrays, got '
                        f'{type(mean_images).__name__}.')
    if not mean_images:
        raise ValueError('mean_images is empty: pass at least one client.')
    num_classes = check_int('num_classes', num_classes, minimum=1, example=NUM_CLASSES)
    for client_id, images in mean_images.items():
        if np.shape(images)[:1] != (num_classes,):
            raise ValueError(f'mean_images[{client_id!r}] must have one image per class, shape '
                             f'[{num_classes}, 28, 28] (from mean_image_per_label), got {np.shape(images)}.')
    figure, axes = plt.subplots(len(mean_images), num_classes,
                                figsize=(num_classes * 0.9, len(mean_images) * 1.0), squeeze=False)
    for row, (client_id, images) in enumerate(mean_images.items()):
        for label in range(num_classes):
            axis = axes[row, label]
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_box_aspect(1)
            if not np.isnan(images[label]).all():
                axis.imshow(images[label], cmap='gray', vmin=0.0, vmax=1.0)
            if row == 0:
                axis.set_title(str(label), fontsize=9)
        axes[row, 0].set_ylabel(client_id, rotation=0, ha='right', va='center', fontsize=8)
    figure.tight_layout()
    return figure


# Line styles and markers as well as colours, so that series stay apart in greyscale and for
# colour-blind readers; the same order everywhere, so series keep their look across figures.
LINE_STYLES = ('-', '--', ':', '-.')
MARKERS = ('o', 's', '^', 'D', 'v', 'P')


def series_style(index: int) -> dict:
    """Return the line style and marker keyword arguments for the `index`-th series of a figure."""
    check_int('index', index, minimum=0, example=0)
    return {'linestyle': LINE_STYLES[index % len(LINE_STYLES)],
            'marker': MARKERS[index % len(MARKERS)], 'markersize': 4}


def plot_metric_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], metric: str,
                       ylabel: str | None = None, ax: plt.Axes | None = None,
                       title: str | None = None) -> plt.Axes:
    """Plot `metric` against the round number, one line (own style and marker) per named history."""
    if not histories:
        raise ValueError('histories is empty: pass at least one named history.')
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5))
    for index, (name, history) in enumerate(histories.items()):
        for key in ('round', metric):
            if key not in history:
                raise KeyError(f'History {name!r} has no {key!r} (metric={metric!r}); it has '
                               f'{sorted(history)}.')
        ax.plot(history['round'], history[metric], label=name, **series_style(index))
    ax.set_xlabel('round')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or metric.replace('_', ' '))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    # Outside the axes, so that the legend never covers a curve.
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9)
    ax.figure.tight_layout()
    return ax
