"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each YAML option of a group pulls its schema through its defaults list
(``- /schema/<group>/<name>@_here_``), so a misspelt key or a wrong type is
rejected at compose time with the full key name. Values that need more than a
type check (choices, ranges, combinations) are checked in
:mod:`mtlrun.config.validate`, all at once, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# --------------------------------------------------------------------------- data

DATA_ROOT = "${oc.env:MTLRUN_DATA,data}"


@dataclass
class DataConf:
    _target_: str = MISSING
    name: str = MISSING
    modality: str = MISSING  # text | image: which backbones fit
    tasks: list[str] = MISSING
    limit_train: int | None = None
    limit_eval: int | None = None


@dataclass
class ToyDataConf(DataConf):
    _target_: str = "mtlrun.data.tagging.toy_data"
    name: str = "toy"
    modality: str = "text"
    tasks: list[str] = field(default_factory=lambda: ["pos", "chunk", "ner"])
    n_train: int = 2000
    n_valid: int = 300
    n_test: int = 300
    seed: int = 0
    max_sentence_len: int | None = None  # split longer training sentences (null: keep whole)
    batching: str = "random"  # random | buckets (length buckets; recorded as a deviation)
    buckets: int = 10  # length buckets of batching=buckets


@dataclass
class ConllDataConf(DataConf):
    _target_: str = "mtlrun.data.tagging.conll_data"
    name: str = "conll"
    modality: str = "text"
    tasks: list[str] = field(default_factory=lambda: ["pos", "chunk", "ner"])
    root: str = DATA_ROOT + "/conll2003"
    source: str = "files"  # files | hub
    min_word_freq: int = 1
    max_word_len: int = 30
    max_sentence_len: int | None = None  # split longer training sentences (null: keep whole)
    batching: str = "random"  # random | buckets (length buckets; recorded as a deviation)
    buckets: int = 10  # length buckets of batching=buckets
    # Training label scheme per span task, bio | bioes (Sun et al.'s prepare-data.py); scored in BIO.
    tag_schemes: dict[str, str] = field(default_factory=lambda: {"chunk": "bio", "ner": "bioes"})
    zero_digits: bool = False  # map digits to 0 in the word table (Sun et al. keep them)


@dataclass
class TaggingDataConf(DataConf):
    """Any CoNLL-style column files (docs/data-tagging.md). The defaults read CoNLL-2003's files
    under MTLRUN_DATA as data=conll does; point root/train/valid/test, columns and tasks at
    other data."""

    _target_: str = "mtlrun.data.tagging.tagging_data"
    name: str = "tagging"  # the data set's name in logs, metrics.json and reports
    modality: str = "text"
    tasks: list[str] = field(default_factory=lambda: ["pos", "chunk", "ner"])  # columns to train
    root: str = DATA_ROOT + "/conll2003"
    train: str = "train.txt"  # file names under root (an absolute path stands alone)
    valid: str = "valid.txt"
    test: str = "test.txt"
    # task -> {column: 0-based index (negative: from the end), scheme: token | iob1 | iob2 |
    # bio | bioes, metric: accuracy | f1 | null (token: accuracy, spans: f1)}; null: CoNLL-2003's
    # (pos 1 token, chunk 2 iob1, ner 3 iob1). Typed as Any (as balancer.weights) so that
    # data.columns={upos: {column: 3}} replaces it from the command line; tagging_data checks it.
    columns: Any = None
    word_column: int = 0
    separator: str = "whitespace"  # whitespace | tab (tab: fields may hold spaces, CoNLL-U)
    comment: str | None = None  # skip lines starting with this ("#" for CoNLL-U)
    docstart: str | None = "-DOCSTART-"  # a first field marking a new document (dropped)
    id_column: int | None = None  # CoNLL-U ID column: skip multiword (1-2) and empty (1.1) lines
    min_word_freq: int = 1
    max_word_len: int = 30
    max_sentence_len: int | None = None  # split longer training sentences (null: keep whole)
    batching: str = "random"  # random | buckets (length buckets; recorded as a deviation)
    buckets: int = 10  # length buckets of batching=buckets
    # Training label scheme per span (f1) task, bio | bioes, scored in BIO; null: all BIO. Any
    # (as columns) so that data.tag_schemes={ner: bioes} can replace the null.
    tag_schemes: Any = None
    zero_digits: bool = False  # map digits to 0 in the word table


@dataclass
class Mnist3DataConf(DataConf):
    _target_: str = "mtlrun.data.images.mnist3_data"
    name: str = "mnist3"
    modality: str = "image"
    tasks: list[str] = field(default_factory=lambda: ["mnist", "fashion", "kmnist"])
    root: str = DATA_ROOT
    valid_size: int = 5000
    missing_train: str = "error"  # error | split_test
    split_seed: int = 0
    # task -> RandomAffine degrees (= shear) on training batches; null: off. The authors'
    # configs/trinist: {mnist: 10, fashion: 10, kmnist: 20} (experiment=thesis_table1 sets it)
    # Typed as Any (as balancer.weights): OmegaConf cannot merge a command-line dict into a
    # null typed dict; mnist3_data checks the value.
    random_affine: Any = None


@dataclass
class VisionDataConf(DataConf):
    """Image tasks from torchvision's data sets (docs/data-images.md); data=mnist3 is one."""

    _target_: str = "mtlrun.data.vision.vision_data"
    name: str = "vision"
    modality: str = "image"
    # task -> a torchvision.datasets class name, or {dataset, root, classes, args, train_split,
    # test_split}, e.g. {cifar: CIFAR10, svhn: {dataset: SVHN, root: PATH}}. Required; Any and
    # null so that a command-line dict replaces it (a typed or filled dict would only merge
    # into it), and vision_data names the key when it is left unset.
    tasks: Any = None
    root: str = DATA_ROOT  # each class looks for its own files under it (or a task's root)
    download: bool = False  # let torchvision fetch missing files (online)
    verify: bool = True  # false: torchvision's checksum checks only ask that files exist
    valid_size: int = 5000  # validation: the last N training images of each task
    missing_train: str = "error"  # error | split_test
    split_seed: int = 0
    channels: int | None = None  # 1 | 3: convert every task's images (null: refuse a mix)
    size: list[int] | None = None  # [H, W]: resize every task's images (null: refuse a mix)
    random_affine: Any = None  # task -> RandomAffine degrees on training batches (as mnist3)


@dataclass
class PythonDataConf(DataConf):
    """One's own tasks from a Python function (docs/data-python.md)."""

    _target_: str = "mtlrun.data.custom.python_data"
    name: str = "python"
    modality: str = "image"  # image for TaskTensors; a MultiTaskData object's own otherwise
    factory: str | None = None  # required: package.module:function or path/to/file.py:function
    args: Any = None  # keyword arguments of the function (Any: a command-line dict replaces it)
    tasks: Any = None  # null: every task the function returns; else a list of them


# ---------------------------------------------------------------------- backbones


@dataclass
class BackboneConf:
    _target_: str = MISSING
    modality: str = MISSING


@dataclass
class CNNBiLSTMConf(BackboneConf):
    _target_: str = "mtlrun.backbones.cnn_bilstm.CNNBiLSTM"
    modality: str = "text"
    word_dim: int = 100
    char_dim: int = 30
    char_filters: int = 30
    char_width: int = 3
    hidden: int = 200
    dropout: float = 0.5
    char_dropout: float | None = None  # dropout on char embeddings before the CNN (null: dropout)
    char_activation: str = "relu"  # relu | none: after the char CNN (fastNLP's CNNCharEmbedding)
    char_proj: bool = False  # fastNLP's Linear after the char CNN (+930 encoder params; theirs)
    word_dropout: float = 0.01  # probability of replacing a word by <unk> in training
    word_vectors: str | None = None  # GloVe-format text file (the authors: glove.6B.100d.txt)
    init: str = "fastnlp"  # fastnlp (Sun et al.'s code) | ma_hovy (Ma & Hovy 2016 §3.1)
    lstm_kernel: str = "auto"  # auto | padded | packed: how the BiLSTM runs (same function)


@dataclass
class LeNetBNConf(BackboneConf):
    _target_: str = "mtlrun.backbones.lenet_bn.LeNetBN"
    modality: str = "image"
    # the authors' lenet.py: 20, 50 channels; layout relu_pool_bn (conv -> ReLU -> pool -> BN);
    # bn_relu_pool with channels [6, 16] is mtlrun's earlier net
    channels: list[int] = field(default_factory=lambda: [20, 50])
    kernel: int = 5
    layout: str = "relu_pool_bn"  # relu_pool_bn | bn_relu_pool


@dataclass
class ResNetConf(BackboneConf):
    _target_: str = "mtlrun.backbones.resnet.ResNet"
    modality: str = "image"
    depth: int = 18
    layers: list[int] | None = None  # overrides depth, e.g. [1, 1, 1, 1]
    width: int = 64


# ------------------------------------------------------------------------ methods


@dataclass
class MethodConf:
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class SingleConf(MethodConf):
    _target_: str = "mtlrun.methods.single.SingleTask"
    name: str = "single"


@dataclass
class HardConf(MethodConf):
    _target_: str = "mtlrun.methods.hard.HardSharing"
    name: str = "hard"


@dataclass
class SoftConf(MethodConf):
    _target_: str = "mtlrun.methods.soft.SoftSharing"
    name: str = "soft"
    coupling: str = "cross_stitch"  # cross_stitch | l2
    l2_weight: float = 1e-3  # λ of the L2 coupling Σ_{s<t} ||θ_s − θ_t||²
    stitch_self: float = 0.9  # initial α_tt of the cross-stitch units (the rest share 1 − α_tt)


@dataclass
class HierarchicalConf(MethodConf):
    _target_: str = "mtlrun.methods.hierarchical.Hierarchical"
    name: str = "hierarchical"
    task_layers: dict[str, int] = field(default_factory=lambda: {"pos": 1, "chunk": 2, "ner": 2})


@dataclass
class SparseMethodConf(MethodConf):
    keep_ratio: float = 0.5  # per-task density of the discretised masks
    warmup_epochs: int = 0  # dense multi-task training before the mask search
    per_layer: bool = False  # top-k per parameter tensor instead of global


@dataclass
class SparseSTEConf(SparseMethodConf):
    _target_: str = "mtlrun.methods.sparse_ste.SparseSTE"
    name: str = "sparse_ste"
    search_epochs: int = 10
    pi_lr: float = 3e-3
    pi_weight_decay: float = 1e-5
    pi_init: str = "uniform"  # uniform: U(0,1) | constant: pi_init_value
    pi_init_value: float = 0.5
    finetune_epochs: int = 0  # fine-tune θ with the fixed masks (0: evaluate the searched θ)
    # last: Algorithm 1 (θ and π after all search epochs; the search never looks at keep_ratio,
    # so a keep-ratio sweep searches once) | best: the search epoch with the best validation
    # score at method.keep_ratio (early stopping by trainer.patience)
    search_select: str = "last"


@dataclass
class SparseIMPConf(SparseMethodConf):
    _target_: str = "mtlrun.methods.sparse_imp.SparseIMP"
    name: str = "sparse_imp"
    # Sun et al.'s code keeps pruning round 10 of 20 (prepare-masks.sh): density 0.1^(10/20).
    keep_ratio: float = 0.1 ** (10 / 20)
    rounds: int = 20
    final_density: float = 0.1
    prune_epochs: int | None = None  # epochs per pruning round; null: trainer.max_epochs
    select: str = "nearest"  # nearest: the round nearest keep_ratio | valid: best of candidates
    stop_after_target: bool = True  # select=valid: stop once the `candidates` rounds ran
    candidates: int = 3  # select=valid: rounds nearest the target compared on validation


@dataclass
class SingleSubnetConf(SparseIMPConf):
    _target_: str = "mtlrun.methods.single_subnet.SingleSubnet"
    name: str = "single_subnet"
    # a finished sparse_imp run (no warm-up, same pruning inputs) whose masks this run takes
    masks_from: str | None = None


@dataclass
class STEFitConf(MethodConf):
    """Seed 000 Appendix A: fit a U(0,1) vector from its Bernoulli samples with Adam + STE."""

    _target_: str = "mtlrun.methods.ste_fit.STEFit"
    name: str = "ste_fit"
    dim: int = 1000
    n_samples: int = 1000
    epochs: int = 500
    batch_size: int = 100
    lr: float = 1e-2
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class AdaShareConf(MethodConf):
    """AdaShare (arXiv 1911.12423; defaults from the authors' code, see conf/method/adashare.yaml)."""

    _target_: str = "mtlrun.methods.adashare.AdaShare"
    name: str = "adashare"
    tau0: float = 5.0  # Gumbel-softmax temperature of policy epoch 1
    tau_decay: float = 0.965  # τ of policy epoch e = tau0 · tau_decay^(e−1)
    lambda_sparsity: float = 0.05  # weight of the sparsity loss (authors' reg_w)
    lambda_sharing: float = 0.05  # weight of the sharing loss (authors' reg_w_hamming)
    sparsity_form: str = "code"  # code: mean CE towards skip | paper: Σ log p(select)
    sharing_form: str = "code"  # code: (l+1)/L on select logits | paper: (L−l)/L on p(select)
    warmup_epochs: int = 4  # hard-sharing epochs on the whole training set
    policy_epochs: int = 32  # must exceed L·curriculum_speed (best chosen after that)
    curriculum_speed: int = 3  # epoch e searches the last ⌊(e−1)/speed⌋+1 blocks
    alternate: str = "pass"  # pass: a weight pass then a policy pass per epoch | step
    hard_sampling: bool = False  # straight-through hard Gumbel samples (authors: soft)
    search_eval: str = "sample"  # validation in the search: sample (a drawn policy) | argmax
    authors_optimizers: bool = True  # warm-up Adam β(0.5,0.999), policy phase SGD m 0.9
    policy_lr: float = 0.01  # Adam on the policy logits
    policy_weight_decay: float = 5e-4  # that Adam's weight decay
    policy_split: float = 0.2  # fraction of each task's training set kept for policy updates
    n_samples: int = 8  # policies drawn after the search (plus the most likely one)
    retrain_samples: int = 0  # >0: retrain this many drawn policies, keep the best on valid
    init_select: float = 0.5  # initial select probability of every block and task


@dataclass
class TreeSearchConf(MethodConf):
    """Seed 001 §5 Algorithms 2-5: greedy minimum-stress tree search (see conf/method/)."""

    _target_: str = "mtlrun.methods.tree_search.TreeSearch"
    name: str = "tree_search"
    n_splits: int = 2  # greedy steps N of Alg. 5 (each splits one block into two)
    peel_epochs: int = 3  # peel fine-tuning (authors' split_tuning: 3; Table 1(a) caption: 10)
    l1: float = 0.001  # slimming λ on the joint net's BN scales (authors' averaging.yaml)
    peel_l1: float = 0.0045  # slimming λ while fine-tuning peels (authors' split_tuning)
    l1_form: str = "smooth_l1"  # smooth_l1 (authors' slimming_loss) | l1 (eq. 5.6)
    max_stationary_epochs: int = 10  # cap of each "train to Pareto stationarity" phase
    stationary_share: float = 0.5  # stop a phase once the epoch's kkt/stationary share >= this
    similarity_batches: int | None = None  # batches of 256 images per task (null: all, authors)
    probe_split: str = "train"  # images for eq. 5.1-5.8: train (authors' unzip) | valid
    positions: str = "random"  # random (authors: one position per batch) | mean (all h·w)
    importance: str = "sum"  # channel weights I1 + I2 (authors' inter_stress) | mean (eq. 5.8)
    random_splits: bool = False  # Table 1 baseline: random blocks, random two-way partitions
    random_seed: int = 0  # seed of the random splits


# ---------------------------------------------------------------------- balancers


@dataclass
class BalancerConf:
    _target_: str = MISSING


@dataclass
class EqualConf(BalancerConf):
    _target_: str = "mtlrun.balancers.equal.Equal"
    name: str = "equal"
    # Static per-task weights, e.g. balancer.weights={ner:2.0}; other tasks get 1. Typed as Any
    # because OmegaConf cannot add keys to a typed empty dict from the command line.
    weights: Any = None
    kkt_every: int = 10  # check Pareto-stationarity on one mini-batch in N (0: never)
    kkt_tol: float = 0.05  # stationary when ||Σ α g|| <= kkt_tol · max_t ||g_t||


@dataclass
class UncertaintyConf(BalancerConf):
    _target_: str = "mtlrun.balancers.uncertainty.Uncertainty"
    name: str = "uncertainty"
    lr: float = 0.01  # Adam on the log-variances
    init_log_var: float = 0.0
    # Kendall et al.'s term per likelihood: classification e^{-s}L + s/2 | regression ½e^{-s}L + s/2
    loss_type: str = "classification"
    # Per-task override of loss_type, e.g. balancer.task_types={ner: regression} (Any: as weights).
    task_types: Any = None
    kkt_every: int = 10
    kkt_tol: float = 0.05


@dataclass
class GradNormConf(BalancerConf):
    _target_: str = "mtlrun.balancers.gradnorm.GradNorm"
    name: str = "gradnorm"
    on: str = "params"  # params (eq. 4.10) | z (block outputs, eq. 4.11; shared input only)
    alpha: float = 1.5
    lr: float = 0.025  # Adam on the task weights
    at: str = "segment"  # segment (last block of each chain with the same tasks) | block
    kkt_every: int = 10
    kkt_tol: float = 0.05


@dataclass
class MGDAConf(BalancerConf):
    _target_: str = "mtlrun.balancers.mgda.MGDA"
    name: str = "mgda"
    solver: str = "projection"  # exact (two tasks) | frank_wolfe | projection
    normalize: str = "none"  # none | l2 | loss | loss+
    on: str = "params"  # params | z (MGDA-UB)
    at: str = "segment"  # where on=z balances: segment | block
    max_iter: int = 250
    kkt_every: int = 1
    kkt_tol: float = 0.05
    compare_solvers: bool = False  # also log frank_wolfe and projection iterations (Fig. 3)
    group: str = "block"  # block | all (one problem over the shared blocks of the same tasks)


@dataclass
class MGDAUBConf(MGDAConf):
    name: str = "mgda_ub"
    on: str = "z"


@dataclass
class HybridConf(BalancerConf):
    _target_: str = "mtlrun.balancers.hybrid.Hybrid"
    _recursive_: bool = False  # the phases are built by the hybrid, with the run's tasks
    name: str = "hybrid"
    eps: float = 0.01  # switch to `then` when some task's epoch training loss drops by <= eps
    ub: str = "auto"  # auto | z | params | each: the `on` of every phase that has one
    # The two phases: any conf/balancer choice (conf/balancer/hybrid.yaml composes gradnorm and
    # mgda); balancer@balancer.then=upgrad swaps one, balancer.first.alpha=2 sets its keys.
    first: Any = None
    then: Any = None


@dataclass
class PerBlockConf(BalancerConf):
    """Any weighting applied per shared block by the driver (mtlrun/balancers/per_block.py)."""

    _target_: str = "mtlrun.balancers.per_block.PerBlock"
    name: str = MISSING
    paper: str = ""  # the reference (shown by --help)
    # The weighting: a node with _target_ (mtlrun's or torchjd's class) and _partial_: true, built
    # once per block; its arguments are balancer.weighting.<key>. Any: each has its own keys.
    weighting: Any = MISSING
    stat: str = "auto"  # what the weighting reads: auto | gram | factor | rows | direction
    on: str = "params"  # params | z (block outputs; shared input only)
    at: str = "segment"  # where on=z balances: segment | block
    kkt_every: int = 1  # the monitor reuses the block Gram matrices: every step is free
    kkt_tol: float = 0.05
    deviations: list[str] = field(default_factory=list)  # departures from the authors' code
    # block: one weighting per shared block; all: one over the shared blocks of the same tasks
    # (the authors' and LibMTL's grouping for hard sharing)
    group: str = "block"
    block_deviation: str = ""  # a departure only group=block makes (not recorded with all)


@dataclass
class IMTLConf(BalancerConf):
    _target_: str = "mtlrun.balancers.imtl.IMTL"
    name: str = "imtl"
    lr: float = 1e-3  # Adam on the loss scales s_t (IMTL-L)
    on: str = "params"
    at: str = "segment"
    kkt_every: int = 1
    kkt_tol: float = 0.05
    group: str = "block"  # block | all (LibMTL's: one IMTL-G over all shared parameters)


@dataclass
class DBMTLConf(BalancerConf):
    _target_: str = "mtlrun.balancers.db_mtl.DualBalancing"
    name: str = "db_mtl"
    beta: float = 0.9  # EMA of the log-loss gradients (LibMTL's DB_beta)
    beta_sigma: float = 0.0  # the EMA's step decay k^-beta_sigma (DB_beta_sigma)
    kkt_every: int = 1
    kkt_tol: float = 0.05
    group: str = "block"  # block | all (LibMTL's: one EMA over all shared parameters)


@dataclass
class LossBasedConf(BalancerConf):
    """A weighting of the task losses (mtlrun/balancers/loss_based.py)."""

    _target_: str = "mtlrun.balancers.loss_based.LossBalancer"
    name: str = MISSING
    paper: str = ""
    weighting: Any = MISSING  # _target_ + _partial_: true; arguments balancer.weighting.<key>
    kkt_every: int = 10
    kkt_tol: float = 0.05
    deviations: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------- optim


@dataclass
class OptimConf:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0


@dataclass
class SGDConf(OptimConf):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConf(OptimConf):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdaShare's code: 0.5, 0.999


# ------------------------------------------------------------------------ trainer


@dataclass
class TrainerConf:
    max_epochs: int = 12
    batch_size: int = 16
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False
    resume_dir: str | None = None  # run dir to resume; default: the newest unfinished run
    grad_clip: float | None = 5.0  # max global gradient norm; null disables
    patience: int | None = None  # stop after this many epochs without a better valid score
    max_minutes: float | None = None  # stop after the epoch that crosses this wall-time budget
    steps_per_epoch: int | None = None  # default: one pass over the largest task
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or GPU) | fp16 (CUDA, loss scaling)
    progress: bool = True  # progress bar (only shown on a terminal)
    save_predictions: bool = True
    plots: bool = True
    threads: int | None = None  # torch CPU threads; null: the job's share of the box (sweeps)
    tensorboard: bool = False  # event files under <run>/tensorboard/ (needs mtlrun[tensorboard])
    # Finished search phases shared by runs whose searches read the same inputs (a keep-ratio
    # sweep searches once); relative to the launch directory; null: never shared.
    search_cache: str | None = "${oc.env:MTLRUN_SEARCH_CACHE,outputs/search_cache}"


# ---------------------------------------------------------------------- scheduler
# The learning rate of each epoch of a training phase (mtlrun/training/schedule.py; every phase
# of a method starts its schedule afresh at optim.lr). docs/training.md describes each option.


@dataclass
class ConstantSchedulerConf:
    _target_: str = "mtlrun.training.schedule.Constant"


@dataclass
class InverseTimeSchedulerConf:
    _target_: str = "mtlrun.training.schedule.InverseTime"
    decay: float = 0.05  # lr_e = lr / (1 + decay * e)  (Ma & Hovy 2016; was trainer.lr_decay)


@dataclass
class StepSchedulerConf:
    _target_: str = "mtlrun.training.schedule.Step"
    step_size: int = 10  # epochs between two multiplications by gamma
    gamma: float = 0.1


@dataclass
class WarmupSchedulerConf:
    _target_: str = "mtlrun.training.schedule.Warmup"
    epochs: int = 1  # linear warm-up epochs, from start_factor * lr to lr; then lr
    start_factor: float = 0.1


@dataclass
class CosineSchedulerConf:
    _target_: str = "mtlrun.training.schedule.Cosine"
    eta_min: float = 0.0  # the lr that the cosine reaches at the end of the phase
    warmup_epochs: int = 0  # linear warm-up before the cosine (0: none)
    warmup_start_factor: float = 0.1


@dataclass
class PlateauSchedulerConf:
    _target_: str = "mtlrun.training.schedule.Plateau"
    factor: float = 0.1  # lr *= factor when the mean validation score stalls
    patience: int = 10  # epochs without improvement before a reduction
    threshold: float = 1e-4  # relative improvement that counts
    cooldown: int = 0  # epochs after a reduction before counting again
    min_lr: float = 0.0


# ------------------------------------------------------------------------- logger
# logger=mlflow|wandb|tensorboard, or several: logger=[mlflow,tensorboard]. Each option's YAML
# puts its settings under its own key (logger.mlflow.*, ...), so options of the group combine.
# What each tracker records, and where: docs/trackers.md.


@dataclass
class MLflowConf:
    _target_: str = "mtlrun.training.mlflow_tracker.MLflowTracker"
    # a folder (an MLflow file store; relative: to the launch folder) or a URI (http://, sqlite://)
    tracking_uri: str = "${oc.env:MLFLOW_TRACKING_URI,mlruns}"
    experiment: str | None = None  # null: the sweep folder for a sweep's jobs, else `name`
    run_name: str | None = None  # null: the run folder's name
    tags: Any = None  # extra run tags, e.g. logger.mlflow.tags={owner:me} (Any: as weights)
    artifacts: bool = True  # log the run folder's plots, JSON, history.csv and .hydra/ files


@dataclass
class WandbConf:
    _target_: str = "mtlrun.training.wandb_tracker.WandbTracker"
    mode: str = "offline"  # offline (<run>/wandb/; `wandb sync` later) | online | disabled
    project: str = "mtlrun"
    entity: str | None = None
    group: str | None = None  # null: the sweep folder for a sweep's jobs, else `name`
    run_name: str | None = None  # null: the run folder's name
    tags: list[str] = field(default_factory=list)
    artifacts: bool = True  # save the run folder's plots, JSON, history.csv and .hydra/ files


@dataclass
class TensorBoardConf:
    """Event files under <run>/tensorboard/ (``trainer.tensorboard=true`` is an alias)."""

    _target_: str = "mtlrun.training.trackers.TensorBoardTracker"


# ------------------------------------------------------------------------- top


@dataclass
class Config:
    data: Any = MISSING
    backbone: Any = MISSING
    method: Any = MISSING
    balancer: Any = MISSING
    optim: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    scheduler: Any = MISSING
    logger: Any = None  # logger=<option> or a list: {mlflow: ..., wandb: ..., tensorboard: ...}
    name: str = "run"  # experiment name, recorded in metrics.json
    notes: str | None = None


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "toy": ToyDataConf,
        "conll": ConllDataConf,
        "tagging": TaggingDataConf,
        "mnist3": Mnist3DataConf,
        "vision": VisionDataConf,
        "python": PythonDataConf,
    },
    "backbone": {"cnn_bilstm": CNNBiLSTMConf, "lenet_bn": LeNetBNConf, "resnet": ResNetConf},
    "method": {
        "single": SingleConf,
        "hard": HardConf,
        "soft": SoftConf,
        "hierarchical": HierarchicalConf,
        "sparse_ste": SparseSTEConf,
        "sparse_imp": SparseIMPConf,
        "single_subnet": SingleSubnetConf,
        "ste_fit": STEFitConf,
        "tree_search": TreeSearchConf,
        "adashare": AdaShareConf,
    },
    "balancer": {
        "equal": EqualConf,
        "uncertainty": UncertaintyConf,
        "gradnorm": GradNormConf,
        "mgda": MGDAConf,
        "mgda_ub": MGDAUBConf,
        "hybrid": HybridConf,
        "per_block": PerBlockConf,
        "loss_based": LossBasedConf,
        "imtl": IMTLConf,
        "db_mtl": DBMTLConf,
    },
    "optim": {"sgd": SGDConf, "adam": AdamConf},
    "trainer": {"default": TrainerConf},
    "scheduler": {
        "constant": ConstantSchedulerConf,
        "inverse_time": InverseTimeSchedulerConf,
        "step": StepSchedulerConf,
        "warmup": WarmupSchedulerConf,
        "cosine": CosineSchedulerConf,
        "plateau": PlateauSchedulerConf,
    },
    "logger": {"mlflow": MLflowConf, "wandb": WandbConf, "tensorboard": TensorBoardConf},
}


def register_configs() -> None:
    """Store the top-level schema and every group schema in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
