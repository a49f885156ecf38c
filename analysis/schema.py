"""The run store's contract: table schemas, metric keys and event kinds (see DESIGN.md, Contract)."""

import pyarrow as pa

TABLES: dict[str, pa.Schema] = {
    "steps": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("key", pa.string()),
            ("value", pa.float64()),
            ("wall_time", pa.float64()),
        ]
    ),
    "tokens": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("sample_id", pa.int64()),
            ("position", pa.int32()),
            ("token_id", pa.int32()),
            ("logp", pa.float32()),
            ("entropy", pa.float32()),
            ("advantage", pa.float32()),
            ("ratio", pa.float32()),
            ("clip_side", pa.int8()),
            ("quadrant", pa.int8()),
        ]
    ),
    "samples": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("sample_id", pa.int64()),
            ("group_id", pa.int64()),
            ("prompt_token_ids", pa.list_(pa.int32())),
            ("response_token_ids", pa.list_(pa.int32())),
            ("prompt_text", pa.string()),
            ("response_text", pa.string()),
            ("reward", pa.float64()),
            ("correct", pa.bool_()),
        ]
    ),
    "hists": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("bin_lo", pa.float64()),
            ("bin_hi", pa.float64()),
            ("count", pa.int64()),
        ]
    ),
    "events": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("wall_time", pa.float64()),
            ("kind", pa.string()),
            ("severity", pa.string()),
            ("message", pa.string()),
            ("payload", pa.string()),
        ]
    ),
}

EVENT_KINDS = (
    "control_applied",
    "control_rejected",
    "alert_fired",
    "alert_resolved",
    "checkpoint",
    "resumed",
    "stopped",
    "error",
)
SEVERITIES = ("info", "warning", "critical")
RUN_STATUSES = ("running", "finished", "failed")

# Step metric keys: the `key` column of `steps` and the MLflow metric names.
ENTROPY_MEAN = "entropy/mean"
ENTROPY_SEQ_MEAN = "entropy/seq_mean"
ENTROPY_P10 = "entropy/p10"
ENTROPY_P50 = "entropy/p50"
ENTROPY_P90 = "entropy/p90"
ENTROPY_TARGET = "entropy/target"
ENTROPY_COV = "entropy/cov_logp_adv"
ENTROPY_PRED_DELTA = "entropy/pred_delta"
ENTROPY_DELTA_BATCH = "entropy/delta_batch"
ENTROPY_DELTA_PRED = "entropy/delta_pred"
ENTROPY_DELTA_PRED_FIRST = "entropy/delta_pred_first"
ENTROPY_DELTA_PRED_E1 = "entropy/delta_pred_e1"
ENTROPY_DELTA_PRED_E2 = "entropy/delta_pred_e2"
ENTROPY_DELTA_PRED_E3 = "entropy/delta_pred_e3"
ENTROPY_DELTA_PRED_E4 = "entropy/delta_pred_e4"
ENTROPY_DELTA_PRED_OTHER = "entropy/delta_pred_other"
CLIP_FRAC = "clip/frac"
CLIP_FRAC_LOW = "clip/frac_low"
CLIP_FRAC_HIGH = "clip/frac_high"
QUADRANT_E1 = "quadrant/e1"
QUADRANT_E2 = "quadrant/e2"
QUADRANT_E3 = "quadrant/e3"
QUADRANT_E4 = "quadrant/e4"
RATIO_MEAN = "ratio/mean"
RATIO_MAX = "ratio/max"
RATIO_ONPOLICY_DEV = "ratio/onpolicy_dev"
PRECISION_LOGP_POS_FRAC = "precision/logp_pos_frac"
PRECISION_LOGP_DIFF_MEAN = "precision/logp_diff_mean"
PRECISION_LOGP_DIFF_MAX = "precision/logp_diff_max"
PRECISION_PROB_DIFF_MEAN = "precision/prob_diff_mean"
PRECISION_PROB_DIFF_MAX = "precision/prob_diff_max"
PRECISION_PEARSON = "precision/pearson"
REWARD_MEAN = "reward/mean"
REWARD_STD = "reward/std"
PASS_AT_1 = "pass@1"
PASS_AT_K = "pass@k"
DIVERSITY_DISTINCT_FRAC = "diversity/distinct_frac"
DIVERSITY_DISTINCT_CORRECT = "diversity/distinct_correct"
ADV_ZERO_FRAC = "adv/zero_frac"
LOSS_POLICY = "loss/policy"
KL_APPROX = "kl/approx"
GRAD_NORM = "grad/norm"
LR = "lr"
RESPONSE_LEN_MEAN = "response/len_mean"
CONTROLLER_ZETA = "controller/zeta"
CONTROLLER_EPS_LOW = "controller/eps_low"
CONTROLLER_EPS_HIGH = "controller/eps_high"
CONTROLLER_COEF = "controller/coef"
CONTROLLER_AT_BOUND = "controller/at_bound"
CONTROLLER_BOUND_DIR = "controller/bound_dir"
CONTROLLER_CLOSED_LOOP = "controller/closed_loop"
TIME_STEP = "time/step_s"
TIME_ROLLOUT = "time/rollout_s"
TIME_UPDATE = "time/update_s"
TIME_DIAGNOSTICS = "time/diagnostics_s"
TIME_DELTA = "time/delta_s"
THROUGHPUT_TOKENS = "throughput/tokens_per_s"

METRIC_KEYS: tuple[str, ...] = tuple(
    value
    for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, str) and "/" in value
) + (PASS_AT_1, PASS_AT_K, LR)

# Keys only importers write: other trainers' quantities that differ from any of ours (DESIGN.md, Contract).
CLIP_DUAL_FRAC = "clip/dual_frac"
KL_REF = "kl/ref"
PRECISION_KL_ROLLOUT = "precision/kl_rollout"
IMPORTED_KEYS: tuple[str, ...] = (CLIP_DUAL_FRAC, KL_REF, PRECISION_KL_ROLLOUT)
