{{/* Name of the chart, or nameOverride. */}}
{{- define "scanreport-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name, prefixed to the chart name unless it
already contains it. Truncated to 63 characters (a DNS label, as Service names must be).
*/}}
{{- define "scanreport-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects: prefixed with the release namespace, so that releases of the
same name in different namespaces (e.g. one namespaced install per team) do not collide.
*/}}
{{- define "scanreport-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "scanreport-operator.fullname" .) }}
{{- end }}

{{- define "scanreport-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "scanreport-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scanreport-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scanreport-operator.labels" -}}
helm.sh/chart: {{ include "scanreport-operator.chart" . }}
{{ include "scanreport-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "scanreport-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scanreport-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "scanreport-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The subject of every binding: the operator's ServiceAccount. */}}
{{- define "scanreport-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "scanreport-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
Rules for the ScanRequests of the watched namespaces: in a ClusterRole when watching all
namespaces, otherwise in a Role per watched namespace. One rule per (API group, resource).
*/}}
{{- define "scanreport-operator.namespacedRules" -}}
- apiGroups: ["scanreport.io"]
  resources: ["scanrequests"]
  verbs: ["list", "watch"]
- apiGroups: ["scanreport.io"]
  resources: ["scanrequests/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The Secret that holds the report API's serving certificate. */}}
{{- define "scanreport-operator.reportApiSecret" -}}
{{- if eq .Values.reportApi.certificates.source "secret" -}}
{{- required "reportApi.certificates.existingSecret: name the kubernetes.io/tls Secret of the report API" .Values.reportApi.certificates.existingSecret -}}
{{- else -}}
{{- printf "%s-reports-tls" (include "scanreport-operator.fullname" .) -}}
{{- end -}}
{{- end }}
