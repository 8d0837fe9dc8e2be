"""A site's GPU resource manager that says why it refuses a job: ``SiteGPUResourceManager``.

NVFlare's ``GPUResourceManager`` answers a job whose ``resource_spec`` it cannot meet with a bare ``False``: the
site logs nothing and the server only "not enough sites have enough resources". This subclass logs, at the site,
what the job asked for and what the site offers, and returns that sentence as the refusal's reason (as NVFlare
does for a blocked job). ``FedGINKitBuilder`` puts it into every site kit; ``fedgin kit setup --gpus N`` sets what
it offers.
"""

from __future__ import annotations

from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.resource_managers.gpu_resource_manager import GPUResourceManager

__all__ = ["SiteGPUResourceManager", "refusal"]


def refusal(site: str, job_id: str, requirement: dict, offered: dict[int, float], num_key: str, mem_key: str) -> str:
    """The sentence a site logs when it cannot run a job: what was asked, what is offered, where to change it."""
    want, mem = requirement.get(num_key, 0), requirement.get(mem_key, 0)
    free = ", ".join(f"GPU {i}: {m} GiB free" for i, m in offered.items()) or "no GPU"
    return (f"site {site} refuses job {job_id}: it asks for {want} GPU(s)" + (f" of {mem} GiB" if mem else "")
            + f"; this site offers {len(offered)} ({free}). A site with GPUs offers them with `fedgin kit setup "
            "--gpus N` (local/resources.json); else submit the job with gpus_per_site = 0.")


class SiteGPUResourceManager(GPUResourceManager):
    """``GPUResourceManager`` (same arguments) that explains a refusal in the site's log and its answer."""

    def check_resources(self, resource_requirement: dict, fl_ctx: FLContext):
        ok, token = super().check_resources(resource_requirement, fl_ctx)
        if ok:
            return ok, token
        with self._lock:
            offered = {k: r.memory for k, r in self.resources.items()}
        reason = refusal(fl_ctx.get_identity_name(), str(fl_ctx.get_prop(FLContextKey.CURRENT_JOB_ID, "?")),
                         resource_requirement, offered, self.num_gpu_key, self.gpu_mem_key)
        self.log_error(fl_ctx, reason)
        return False, reason
