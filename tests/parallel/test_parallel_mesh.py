"""MeshConfig resolution and validation; make_mesh on 8 fake CPU devices."""

import jax
import pytest
from jax.sharding import AxisType

from jaxalign.config import ConfigError, from_dict
from jaxalign.parallel import MESH_AXES, MeshConfig, make_mesh


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ((1, -1, 1), (1, 8, 1)),
        ((2, -1, 2), (2, 2, 2)),
        ((-1, 2, 1), (4, 2, 1)),
        ((1, 1, -1), (1, 1, 8)),
        ((2, 2, 2), (2, 2, 2)),
        ((8, 1, 1), (8, 1, 1)),
    ],
)
def test_mesh_shape_resolves_minus_one_to_the_remaining_devices(sizes, expected):
    config = MeshConfig(*sizes)
    assert config.resolve(8) == expected
    mesh = make_mesh(config)
    assert mesh.axis_names == MESH_AXES
    assert tuple(mesh.shape.values()) == expected
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


def test_default_mesh_puts_every_device_on_fsdp():
    assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "tensor": 1}


def test_mesh_on_a_subset_of_devices():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1), devices=jax.devices()[:4])
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
    assert {d.id for d in mesh.devices.flat} == {d.id for d in jax.devices()[:4]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": -1, "fsdp": -1}, "at most one mesh axis may be -1"),
        ({"tensor": 0}, "'tensor' size must be a positive integer or -1"),
        ({"data": -2}, "'data' size must be a positive integer or -1"),
        ({"data": 1.5}, "'data' size must be an integer"),
        ({"data": True}, "'data' size must be an integer"),
    ],
)
def test_invalid_sizes_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MeshConfig(**kwargs)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((3, -1, 1), "multiply to 3, which does not divide the 8 available devices"),
        ((2, 2, 1), "has 4 devices but 8 are available"),
        ((4, 4, 1), "has 16 devices but 8 are available"),
    ],
)
def test_sizes_that_do_not_fit_the_devices_are_rejected(sizes, message):
    with pytest.raises(ValueError, match=message):
        make_mesh(MeshConfig(*sizes))


def test_mesh_config_from_dict_reports_config_errors():
    assert from_dict(MeshConfig, {"data": 2, "tensor": 2}) == MeshConfig(2, -1, 2)
    with pytest.raises(ConfigError, match="at most one mesh axis"):
        from_dict(MeshConfig, {"data": -1})
    with pytest.raises(ConfigError, match="did you mean 'tensor'"):
        from_dict(MeshConfig, {"tensr": 2})


def test_make_mesh_rejects_non_config_and_no_devices():
    with pytest.raises(ValueError, match="must be a MeshConfig"):
        make_mesh({"data": 2})
    with pytest.raises(ValueError, match="devices is empty"):
        make_mesh(MeshConfig(), devices=[])
