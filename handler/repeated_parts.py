"""Keep every multipart part when several share a name (`-F image=@a.jpg -F image=@b.jpg`).

TorchServe 0.12's worker turns each request's parameters into a dict keyed by part name
(`ts.service.Service.retrieve_data_for_inference`), so of several parts named `image` the handler
would see only the last, and the others would be dropped without a word. The frontend does send
them all. `keep_repeated_parts()` wraps that function in this worker process: it runs TorchServe's
own code, then, for a request whose part names repeat, rebuilds its dict in request order with the
repeats under `image#2`, `image#3`, ... (and their part content types likewise). Requests without
repeated names are left exactly as TorchServe made them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Tuple

logger = logging.getLogger(__name__)

REPEAT_SEPARATOR = "#"
_MARK = "_keeps_repeated_parts"


def keep_repeated_parts() -> bool:
    """Install the wrapper once per process; False when TorchServe's worker code is not there to wrap."""
    try:
        from ts.service import Service
    except ImportError:
        return False
    original = Service.retrieve_data_for_inference
    if getattr(original, _MARK, False):
        return True
    wrapped = _wrap(original)
    setattr(wrapped, _MARK, True)
    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    Service.retrieve_data_for_inference = staticmethod(wrapped)
    return True


def _wrap(original: Callable[[Any], Tuple[List[Any], List[Dict[str, Any]], Dict[int, str]]]) -> Callable:
    def retrieve_data_for_inference(batch: Any) -> Tuple[List[Any], List[Dict[str, Any]], Dict[int, str]]:
        headers, input_batch, req_to_id_map = original(batch)
        try:
            for request, model_in, processor in zip(batch, input_batch, headers):
                _keep_repeats(request.get("parameters") or [], model_in, processor.get_request_properties())
        except Exception:  # a TorchServe whose shapes differ: leave its own result untouched
            logger.warning("could not keep repeated multipart parts; only the last of each name is kept", exc_info=True)
        return headers, input_batch, req_to_id_map

    return retrieve_data_for_inference


def _keep_repeats(parameters: List[Dict[str, Any]], model_in: Dict[str, Any], part_headers: Dict[str, Any]) -> None:
    names = [parameter["name"] for parameter in parameters]
    if len(set(names)) == len(names):
        return
    counts: Dict[str, int] = {}
    rebuilt: Dict[str, Any] = {}
    for parameter in parameters:
        name = parameter["name"]
        counts[name] = counts.get(name, 0) + 1
        key = name if counts[name] == 1 else f"{name}{REPEAT_SEPARATOR}{counts[name]}"
        rebuilt[key] = parameter["value"]
        part_headers[key] = {"content-type": parameter["contentType"]}
    model_in.clear()
    model_in.update(rebuilt)
