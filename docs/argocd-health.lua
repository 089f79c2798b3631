-- Argo CD health check for scanreport.io/ScanRequest, with the kstatus semantics the operator
-- writes (docs/controller.md, "Status: the GitOps contract"):
--   Stalled=True (a policy violation, a missing Scanner or ScanPolicy, ...)  -> Degraded
--   Reconciling=True, or a generation not yet observed, or no Ready yet      -> Progressing
--   Ready=True                                                               -> Healthy
-- Install it in argocd-cm as resource.customizations.health.scanreport.io_ScanRequest.
local hs = { status = "Progressing", message = "Waiting for the operator to report" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready, reconciling, stalled
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then ready = condition end
  if condition.type == "Reconciling" and condition.status == "True" then reconciling = condition end
  if condition.type == "Stalled" and condition.status == "True" then stalled = condition end
end
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if reconciling ~= nil then
  hs.message = (reconciling.reason or "Reconciling") .. ": " .. (reconciling.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if ready ~= nil then
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
