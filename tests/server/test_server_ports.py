"""The server's five ports: read from the settings, replaced, and checked against real sockets."""

import socket

import pytest

from mar_builder.errors import ServeError
from mar_builder.server.local_server import read_properties
from mar_builder.server.server_ports import check_free, listening, ports_from, with_ports


def test_the_default_settings_listen_on_loopback_at_torchserves_ports():
    assert listening(read_properties()) == [
        ("inference_address", "127.0.0.1", 8080),
        ("management_address", "127.0.0.1", 8081),
        ("metrics_address", "127.0.0.1", 8082),
        ("grpc_inference_port", "127.0.0.1", 7070),
        ("grpc_management_port", "127.0.0.1", 7071),
    ]


def test_other_ports_keep_each_address_scheme_and_host():
    settings = {"inference_address": "https://0.0.0.0:8443", "management_address": "http://127.0.0.1:8081"}
    changed = with_ports({**settings, "metrics_address": "http://127.0.0.1:8082"}, ports_from(9080))
    assert changed["inference_address"] == "https://0.0.0.0:9080"
    assert changed["management_address"] == "http://127.0.0.1:9081"
    assert (changed["grpc_inference_port"], changed["grpc_management_port"]) == ("9083", "9084")


def test_a_base_port_leaving_no_room_for_five_is_refused():
    with pytest.raises(ServeError, match="choose a base port from 1 to 65531"):
        ports_from(65532)


def test_a_listening_socket_makes_its_port_taken():
    settings = with_ports(read_properties(), [0, 0, 0, 0, 0])
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        settings["metrics_address"] = f"http://127.0.0.1:{port}"
        with pytest.raises(ServeError, match=rf"^port {port} \(metrics_address, 127.0.0.1\) is taken by another"):
            check_free(settings)
    check_free(settings)  # free again once the other program closed it
