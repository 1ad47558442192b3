"""Runs under .venv-clients (the kserve SDK, requirements-clients.txt): one InferenceRESTClient call, JSON out.

argv: the inference base URL, the protocol (v1 or v2), the model name and k; stdin: a JSON list of base64
images. Prints the top-1 label of each image as a JSON list (v2 answers k labels per image: the first is taken).
"""

import asyncio
import json
import sys

import kserve


def main() -> None:
    url, protocol, model, topk = sys.argv[1:]
    images = json.load(sys.stdin)
    client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol=protocol, retries=0))
    if protocol == "v1":
        data = {"instances": [{"data": i} for i in images]}
    else:
        data = kserve.InferRequest(model, [kserve.InferInput("images", [len(images)], "BYTES", images)])
    response = asyncio.run(client.infer(url, data, model_name=model))
    if protocol == "v1":
        top1 = [next(iter(p)) for p in response["predictions"]]
    else:
        top1 = list({o.name: o for o in response.outputs}["labels"].data[:: int(topk)])
    print(json.dumps(top1))


if __name__ == "__main__":
    main()
