{{- define "flink-rs-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flink-rs-operator.serviceAccount" -}}
{{- if .Values.serviceAccount.name -}}{{ .Values.serviceAccount.name }}{{- else -}}{{ include "flink-rs-operator.name" . }}{{- end -}}
{{- end -}}

{{- define "flink-rs-operator.labels" -}}
app.kubernetes.io/name: flink-rs-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The permissions on FlinkJobs and what they own, for a ClusterRole or a Role. */}}
{{- define "flink-rs-operator.rules" -}}
- apiGroups: ["flinkrs.io"]
  resources: ["flinkjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["flinkrs.io"]
  resources: ["flinkjobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["flinkrs.io"]
  resources: ["flinkjobs/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
# Each FlinkJob's internal-TLS Secret ({name}-tls), which the operator creates and renews,
# and its REST token Secret ({name}-rest-token), which it creates and reads.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.networkPolicies.enabled }}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- end -}}
