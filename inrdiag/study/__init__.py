"""Studies: many fits (signals x inits x seeds, or cohort splits x seeds) as one resumable job list.

Modules (all engine code: no printing, no typer/rich):

- ``jobs``: what one job is (a fit of one signal, or one freeze sweep) and how it runs;
- ``rundir``: the run folder, one JSON record per finished job, written atomically;
- ``runner``: runs the pending jobs in this process, in ``--jobs N`` local workers, or sharded
  across the ranks of a ``torchrun`` launch (torch.distributed, gloo on CPU, NCCL on CUDA);
- ``distributed``: the torch.distributed plumbing (environment, process group, shards, gathers);
- ``stats``: summaries and paired statistics (t-based CIs, paired t-test, Wilcoxon signed-rank);
- ``single``: ``compare`` on one target (the table of ``inrdiag compare FILE``);
- ``compare_study``: ``compare`` over a folder of signals with paired statistics;
- ``freeze_study``: freeze-depth sweeps over several held-out splits and seeds.
"""
