"""Manifests checked offline: the InferenceService against KServe's CRD, built-in kinds with kubernetes-validate."""

import copy

import jsonschema
import kubernetes_validate
import pytest
from kserve_reference import inference_service_validator, needs_kserve_reference, runtime

from mar_builder.deploy.manifests import (
    METRICS_PORT,
    ManifestSettings,
    inference_service,
    kserve_manifests,
    kubernetes_manifests,
    torchserve_args,
)

K8S_VERSION = "1.33.0"  # a Kubernetes release KServe supports; kubernetes-validate ships its schemas


@needs_kserve_reference
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_inference_service_validates_against_kserves_crd(protocol):
    manifest = inference_service(ManifestSettings(name="classifier", protocol=protocol))
    inference_service_validator().validate(manifest)
    model = manifest["spec"]["predictor"]["model"]
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert model["modelFormat"] == {"name": "pytorch"} and model["protocolVersion"] == protocol
    assert "FILL-IN" in model["storageUri"]
    assert model["resources"]["requests"]["cpu"] == "2" and model["resources"]["limits"]["memory"] == "3Gi"


@needs_kserve_reference
def test_the_crd_check_refuses_a_misspelt_field_and_a_wrong_type():
    validator = inference_service_validator()
    good = inference_service(ManifestSettings(name="classifier"))
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["predictor"]["model"]["storageURI"] = misspelt["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        validator.validate(misspelt)
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validator.validate(wrong_type)


@needs_kserve_reference
def test_the_runtime_starts_what_the_simulated_pod_starts_and_scrapes_our_metrics_port():
    container = runtime()["spec"]["containers"][0]
    assert container["args"] == torchserve_args()
    scrape = {"prometheus.kserve.io/port": str(METRICS_PORT), "prometheus.kserve.io/path": "/metrics"}
    assert runtime()["spec"]["annotations"] == scrape
    pytorch = {"name": "pytorch", "version": "1", "autoSelect": True, "priority": 2}
    assert pytorch in runtime()["spec"]["supportedModelFormats"]


def test_kubernetes_manifests_validate_strictly():
    documents = kubernetes_manifests(ManifestSettings(name="classifier", max_replicas=6))
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    deployment, service, hpa, policy = documents
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "pytorch/torchserve:0.12.0-cpu"
    assert container["args"] == torchserve_args(foreground=True)
    assert hpa["spec"]["maxReplicas"] == 6 and hpa["spec"]["scaleTargetRef"]["name"] == "classifier"
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == labels == policy["spec"]["podSelector"]["matchLabels"]


def test_kubernetes_validate_refuses_a_misspelt_field():
    deployment = kubernetes_manifests(ManifestSettings(name="classifier"))[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_network_policy_admits_only_the_ingress_and_the_monitoring():
    settings = ManifestSettings(name="classifier")
    for documents in (kserve_manifests(settings), kubernetes_manifests(settings)):
        policy = documents[-1]
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
        sources = {
            rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [
                p["port"] for p in rule["ports"]
            ]
            for rule in policy["spec"]["ingress"]
        }
        assert set(sources) == {"istio-system", "monitoring"} and sources["monitoring"] == [METRICS_PORT]
        assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_settings_refuse_an_unknown_protocol_and_inverted_replicas():
    with pytest.raises(ValueError, match="protocol must be v1 or v2, got 'v3'"):
        ManifestSettings(name="classifier", protocol="v3")
    with pytest.raises(ValueError, match="min_replicas <= max_replicas"):
        ManifestSettings(name="classifier", min_replicas=3, max_replicas=2)
