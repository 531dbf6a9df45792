{{/* The release's full name: the release name, with "-rollguard" unless it already says so. */}}
{{- define "rollguard.fullname" -}}
{{- if contains "rollguard" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-rollguard" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rollguard.labels" -}}
app.kubernetes.io/name: rollguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rollguard.selectorLabels" -}}
app.kubernetes.io/name: rollguard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rollguard.serviceAccountName" -}}
{{- default (include "rollguard.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The username the API server sees for the operator's ServiceAccount. */}}
{{- define "rollguard.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "rollguard.serviceAccountName" .) -}}
{{- end -}}

{{- define "rollguard.leaseName" -}}
{{- default (include "rollguard.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "rollguard.namespaced" -}}
{{- if eq .Values.scope.mode "namespaced" -}}
{{- $_ := required "scope.watchNamespace is required with scope.mode namespaced" .Values.scope.watchNamespace -}}
true
{{- else if ne .Values.scope.mode "cluster" -}}
{{- fail (printf "scope.mode must be cluster or namespaced, not %q" .Values.scope.mode) -}}
{{- end -}}
{{- end -}}
