"""The FedGIN job, built with NVFlare 2.9's Job API from values.

``FedGINRecipe(values)`` is an NVFlare ``Recipe`` around a ``FedJob``: on the server ``ScatterAndGather`` over
``train`` (``ScatterAndGatherScaffold`` for SCAFFOLD) with the sample-weighted ``CheckedAggregator`` (and
FedOpt's server optimiser, ``fedgin.flare.server_optim``), the ``RoundPersistor``, the model selector, TensorBoard
(and optionally MLflow) receivers and cross-site evaluation; on every site one ``FedGINExecutor`` whose results pass
through ``PrivacyFilter`` and ``OutgoingAudit``. The same recipe runs in ``SimEnv`` (``fedgin.flare.simulate``),
is submitted to a running POC or production federation through ``ProdEnv`` (``fedgin.flare.poc``), or is exported
as a job folder for ``nvflare simulator`` / ``nvflare job submit`` (``fedgin.flare.job.build_job``).

A variant is a set of values (``JOB_DEFAULTS`` lists every one with its default), checked before anything is
built; the exported configs state every value concretely (no ``{var}`` left to substitute).
"""

from __future__ import annotations

from typing import Any

from nvflare.app_common.shareablegenerators.full_model_shareable_generator import FullModelShareableGenerator
from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent
from nvflare.app_common.widgets.streaming import AnalyticsSender
from nvflare.app_common.widgets.validation_json_generator import ValidationJsonGenerator
from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
from nvflare.app_common.workflows.scatter_and_gather_scaffold import ScatterAndGatherScaffold
from nvflare.app_opt.pt.file_model_locator import PTFileModelLocator
from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType
from nvflare.recipe.spec import Recipe

__all__ = ["JOB_DEFAULTS", "FedGINRecipe", "TASKS", "MODEL_KEYS", "TRACKING", "TRAIN_VARIABLES"]

#: every job value with its default (``fedgin job --set KEY=JSON`` sets any of them)
JOB_DEFAULTS: dict[str, Any] = {
    # federation
    # sites: the job's deploy map ([] = every connected site); a site not named never receives the job
    "sites": [], "min_clients": 2, "num_rounds": 20, "start_round": 0, "resume_from": "",
    "wait_time_after_min_received": 0,
    "max_num_samples": 0, "share_local_models": True, "cse_submit_model_timeout": 600,
    "cse_validation_timeout": 6000, "heldout_datalist": "", "heldout_split": "validation",
    "privacy": {"filter": "none"}, "tracking": "tensorboard", "tracking_uri": "",
    # the server's side of the federated optimisers (methods <name>+fedopt / +scaffold, fedgin.engine.methods)
    "server_optimizer": {"path": "torch.optim.SGD", "args": {"lr": 1.0, "momentum": 0.6}},
    "server_lr_scheduler": {}, "scaffold_control_weights": "uniform",
    # task (normally taken from the sites' datalists)
    "classes": ["liver", "spleen", "kidney_left", "kidney_right"], "size_px": [96, 96], "spacing_mm": [4.0, 4.0],
    "clip_percentiles": [0.5, 99.5],
    # model (fedgin.engine.ModelConfig)
    "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2, "norm": "batch", "dropout": 0.0,
    "domains": [], "test_input": "raw", "arch": "monai",
    # training at the sites (fedgin.engine.TrainConfig)
    "method": "gin", "augment_args": {}, "loss_variant": "auto", "local_epochs": 1, "local_steps": 0,
    "batch_size": 8, "lr": 0.0005, "seed": 0, "amp": True, "channels_last": True, "weight_decay": 0.0001,
    "plateau_factor": 0.5, "plateau_patience": 3, "min_lr": 1e-05, "lambda_dice": 0.5, "lambda_focal": 0.5,
    "focal_gamma": 2.0, "consistency_weight": 10.0, "sampler": "uniform", "eval_batch_size": 32, "fedprox_mu": 0.01,
    # where the sites run; gpus_per_site > 0: the job's resource_spec asks every site for that many GPUs, and
    # NVFlare schedules it only where the site's resource manager offers them (fedgin kit setup --gpus)
    "data_root": "", "device": "auto", "gpus_per_site": 0,
}

TASKS = ["train", "submit_model", "validate"]
MODEL_KEYS = ("channels", "strides", "num_res_units", "norm", "dropout", "domains", "test_input", "arch")
TRACKING = ("tensorboard", "mlflow", "both")
#: the server's top-level settings: heartbeat for long local epochs; 0.5 s task polling (NVFlare's 2 s made
#: every round wait for the sites to pick up their next task: +21 % per round at the demo size)
SERVER_SETTINGS = {"heart_beat_timeout": 600, "task_request_interval": 0.5}


#: the ``TrainConfig`` fields that are job variables of the same name: all of them but ``model``, whose fields
#: are job variables too (``channels``, ``strides``, ...)
TRAIN_VARIABLES = ("method", "augment_args", "batch_size", "lr", "weight_decay", "plateau_factor", "plateau_patience",
                   "min_lr", "lambda_dice", "lambda_focal", "focal_gamma", "loss_variant", "consistency_weight",
                   "sampler", "amp", "channels_last", "seed", "eval_batch_size", "fedprox_mu")


def _train_values(v: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v[k] for k in TRAIN_VARIABLES}, "model": {k: v[k] for k in MODEL_KEYS}}


class FedGINRecipe(Recipe):
    """The FedGIN job for these values (already checked and completed by ``fedgin.flare.job.job_values``).

    Args:
        values: every key of ``JOB_DEFAULTS`` (plus ``num_classes``).
        name: the job's name (``meta.json``; the simulator's workspace folder in ``SimEnv``).
    """

    def __init__(self, values: dict[str, Any], name: str = "fedgin") -> None:
        from fedgin.engine.model import SegUNet
        from fedgin.flare.aggregator import CheckedAggregator
        from fedgin.flare.audit import OutgoingAudit
        from fedgin.flare.executor import FedGINExecutor
        from fedgin.flare.model_selection import FedGINModelSelector
        from fedgin.flare.persistor import RoundPersistor
        from fedgin.flare.privacy import PrivacyFilter

        import copy

        from fedgin.engine.methods import get_method
        from fedgin.flare.aggregator import SCAFFOLD_DATA_KINDS

        v = copy.deepcopy(dict(values))
        self.values = v
        optimizer = get_method(v["method"]).optimizer
        deploy = {"deploy_map": {"app": ["server", *v["sites"]]}} if v["sites"] else None
        job = FedJob(name=name, min_clients=v["min_clients"], meta_props=deploy)
        if v["gpus_per_site"]:  # NVFlare 2.9's portable block: the same request for every site
            job.job.add_resource_spec("@default", {"num_of_gpus": int(v["gpus_per_site"])})
        job.set_app_packages(["fedgin"])  # no copy of fedgin's source: build_job(code="job") adds the whole package
        model = SegUNet(num_classes=v["num_classes"], **{k: v[k] for k in MODEL_KEYS})
        meta = {k: v[k] for k in ("classes", "size_px", "spacing_mm", "clip_percentiles")}
        job.to_server(RoundPersistor(model=model, resume_from=v["resume_from"], meta=meta), id="persistor")
        if optimizer == "fedopt":  # the server steps an optimiser on the averaged update
            from fedgin.flare.server_optim import FedOptGenerator

            from nvflare.recipe.utils import ensure_config_type_dict

            # config_type "dict": built by the generator at run start (with the parameters), not at job load
            job.to_server(FedOptGenerator(optimizer_args=ensure_config_type_dict(v["server_optimizer"]),
                                          lr_scheduler_args=ensure_config_type_dict(v["server_lr_scheduler"] or None),
                                          source_model=SegUNet(num_classes=v["num_classes"],
                                                               **{k: v[k] for k in MODEL_KEYS})),
                          id="shareable_generator")
        else:
            job.to_server(FullModelShareableGenerator(), id="shareable_generator")
        job.to_server(CheckedAggregator(method=v["method"], privacy=v["privacy"], max_num_samples=v["max_num_samples"],
                                        persistor_id="persistor",
                                        expected_data_kind=SCAFFOLD_DATA_KINDS if optimizer == "scaffold" else
                                        "WEIGHT_DIFF"), id="aggregator")
        job.to_server(FedGINModelSelector(heldout_datalist=v["heldout_datalist"], heldout_split=v["heldout_split"],
                                          classes=v["classes"], model={k: v[k] for k in MODEL_KEYS},
                                          weigh_by_local_iter=True), id="model_selector")
        job.to_server(PTFileModelLocator(pt_persistor_id="persistor"), id="model_locator")
        job.to_server(ValidationJsonGenerator(), id="json_generator")
        self._add_tracking(job, v["tracking"], v["tracking_uri"], name)
        controller = ScatterAndGatherScaffold if optimizer == "scaffold" else ScatterAndGather
        job.to_server(controller(min_clients=v["min_clients"], num_rounds=v["num_rounds"],
                                       start_round=v["start_round"],
                                       wait_time_after_min_received=v["wait_time_after_min_received"],
                                       aggregator_id="aggregator", persistor_id="persistor",
                                       shareable_generator_id="shareable_generator", train_task_name="train",
                                       train_timeout=0), id="scatter_and_gather")
        job.to_server(CrossSiteModelEval(model_locator_id="model_locator",
                                         submit_model_task_name="submit_model" if v["share_local_models"] else "",
                                         submit_model_timeout=v["cse_submit_model_timeout"],
                                         validation_timeout=v["cse_validation_timeout"]), id="cross_site_validate")
        job.to_server({"server": dict(SERVER_SETTINGS)})
        executor = FedGINExecutor(classes=v["classes"], train=_train_values(v), local_epochs=v["local_epochs"],
                                  local_steps=v["local_steps"], data_root=v["data_root"], device=v["device"],
                                  share_local_model=v["share_local_models"], start_round=v["start_round"],
                                  scaffold_control_weights=v["scaffold_control_weights"])
        job.to_clients(executor, id="executor", tasks=TASKS)
        job.to_clients(PrivacyFilter(privacy=v["privacy"]), filter_type=FilterType.TASK_RESULT, tasks=TASKS)
        job.to_clients(OutgoingAudit(), filter_type=FilterType.TASK_RESULT, tasks=TASKS)
        job.to_clients(AnalyticsSender(), id="analytic_sender")
        job.to_clients(ConvertToFedEvent(events_to_convert=["analytix_log_stats"], fed_event_prefix="fed."),
                       id="event_to_fed")
        super().__init__(job)

    @staticmethod
    def _add_tracking(job: FedJob, tracking: str, uri: str, name: str) -> None:
        """TensorBoard (``tb_events/<site>/`` in the server's run folder) and/or NVFlare's MLflow receiver (one
        MLflow run per job, the sites' metrics tagged by site; a file store in the run folder unless ``uri``)."""
        if tracking in ("tensorboard", "both"):
            job.to_server(TBAnalyticsReceiver(events=["fed.analytix_log_stats"]), id="tb_analytics_receiver")
        if tracking in ("mlflow", "both"):
            from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver

            job.to_server(MLflowReceiver(tracking_uri=uri or None, events=["fed.analytix_log_stats"],
                                         kw_args={"experiment_name": "fedgin", "run_name": name,
                                                  "experiment_tags": {"method": "fedgin"}}),
                          id="mlflow_receiver")
