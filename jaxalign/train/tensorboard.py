"""Compatibility name for the TensorBoard writer of the training loops that predate
:class:`jaxalign.train.metric_writer.MetricWriter`.

``SummaryWriter(logdir).scalars(step, values)`` / ``close()`` is
:class:`jaxalign.train.metric_writer.TensorBoardWriter` (tensorboardX). New code uses
:class:`~jaxalign.train.metric_writer.MetricWriter`; this module goes once nothing imports it.
"""

from jaxalign.train.metric_writer import TensorBoardWriter as SummaryWriter

__all__ = ["SummaryWriter"]
