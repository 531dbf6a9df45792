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

{{/*
"true" when the operator is confined to listed namespaces (scope.mode namespaced or
namespaces), empty in cluster mode. Fails on a bad scope.
*/}}
{{- define "rollguard.namespaced" -}}
{{- if eq .Values.scope.mode "namespaced" -}}
{{- $_ := required "scope.watchNamespace is required with scope.mode namespaced" .Values.scope.watchNamespace -}}
true
{{- else if eq .Values.scope.mode "namespaces" -}}
{{- if not .Values.scope.namespaces -}}
{{- fail "scope.namespaces must list at least one namespace with scope.mode namespaces" -}}
{{- end -}}
true
{{- else if eq .Values.scope.mode "cluster" -}}
{{- if .Values.scope.namespaces -}}
{{- fail "scope.namespaces is used only with scope.mode namespaces; set scope.mode=namespaces too" -}}
{{- end -}}
{{- else -}}
{{- fail (printf "scope.mode must be cluster, namespaced or namespaces, not %q" .Values.scope.mode) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator acts in, as a JSON list; [] in cluster mode. */}}
{{- define "rollguard.scopeNamespaces" -}}
{{- if eq .Values.scope.mode "namespaced" -}}
{{- list .Values.scope.watchNamespace | toJson -}}
{{- else if eq .Values.scope.mode "namespaces" -}}
{{- .Values.scope.namespaces | uniq | toJson -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/*
matchResources of the people-facing admission policies' bindings: the namespaces of
admissionPolicy.namespaceSelector and, when the scope names namespaces, only those. Another
release serving other namespaces (one operator per namespace set) then never judges this
release's namespaces by its own rules, e.g. refuses this operator's system:rollguard requests.
Empty when neither narrows anything (every namespace).
*/}}
{{- define "rollguard.policyMatchResources" -}}
{{- $selector := deepCopy (.Values.admissionPolicy.namespaceSelector | default dict) -}}
{{- $scope := include "rollguard.scopeNamespaces" . | fromJsonArray -}}
{{- if $scope -}}
{{- $served := dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" $scope -}}
{{- $_ := set $selector "matchExpressions" (append (get $selector "matchExpressions" | default list) $served) -}}
{{- end -}}
{{- if $selector -}}
matchResources:
  namespaceSelector:
    {{- toYaml $selector | nindent 4 }}
{{- end -}}
{{- end -}}

{{/*
CEL for an optional string field: (list "object" "spec" "prometheus" "address") gives the
field's value, or '' when it or anything on the way is absent or null.
*/}}
{{- define "rollguard.celOpt" -}}
{{- $path := first . -}}
{{- $conds := list -}}
{{- range rest . -}}
{{- $path = printf "%s.%s" $path . -}}
{{- $conds = append $conds (printf "has(%s) && %s != null" $path $path) -}}
{{- end -}}
({{ join " && " $conds }} ? {{ $path }} : '')
{{- end -}}

{{/* The same for an optional list: [] when absent or null. */}}
{{- define "rollguard.celList" -}}
{{- $path := first . -}}
{{- $conds := list -}}
{{- range rest . -}}
{{- $path = printf "%s.%s" $path . -}}
{{- $conds = append $conds (printf "has(%s) && %s != null" $path $path) -}}
{{- end -}}
({{ join " && " $conds }} ? {{ $path }} : [])
{{- end -}}

{{/*
What a guard's admission check depends on, as one list of tagged strings, for object or
oldObject: the Secrets and ConfigMaps it names and every address that decides where a
credential or a call goes.
*/}}
{{- define "rollguard.guardInputs" -}}
['prometheus ' + string({{ include "rollguard.celOpt" (list (printf "%s.spec" .) "prometheus" "address") }}), 'prometheus-auth ' + string({{ include "rollguard.celOpt" (list (printf "%s.spec" .) "prometheus" "authSecretRef" "name") }}), 'alertmanager ' + string({{ include "rollguard.celOpt" (list (printf "%s.spec" .) "alertmanager" "address") }}), 'alertmanager-auth ' + string({{ include "rollguard.celOpt" (list (printf "%s.spec" .) "alertmanager" "authSecretRef" "name") }}), 'flags ' + string({{ . }}.spec.flags.configMapRef.name)] + {{ include "rollguard.celList" (list (printf "%s.spec" .) "notify") }}.map(n, 'notify ' + string(n.name) + ' ' + string(has(n.secretRef) && n.secretRef != null ? n.secretRef.name : '')) + {{ include "rollguard.celList" (list (printf "%s.spec" .) "rollback" "snapshot" "include") }}.map(i, 'include ' + string(i.kind) + ' ' + string(i.name)) + {{ include "rollguard.celList" (list (printf "%s.spec" .) "rollback" "hooks" "preRollback") }}.map(h, 'preRollback ' + string(h.url)) + {{ include "rollguard.celList" (list (printf "%s.spec" .) "rollback" "hooks" "postRollback") }}.map(h, 'postRollback ' + string(h.url)) + {{ include "rollguard.celList" (list (printf "%s.spec" .) "health" "http") }}.map(c, 'health ' + string(c.url))
{{- end -}}

{{/* Shared variables of the RolloutGuard policies. */}}
{{- define "rollguard.guardVariables" -}}
- name: user
  expression: "request.userInfo.username"
# CREATE, or an UPDATE that changed what the check depends on (an edit of anything else,
# such as spec.interval, is not re-judged: whoever set the references was checked then).
- name: recheck
  expression: >-
    request.operation == 'CREATE' ||
    {{ include "rollguard.guardInputs" "object" }} !=
    {{ include "rollguard.guardInputs" "oldObject" }}
# get on every Secret / ConfigMap of the namespace: one check instead of one per name.
- name: allSecrets
  expression: "authorizer.group('').resource('secrets').namespace(request.namespace).check('get').allowed()"
- name: allConfigMaps
  expression: "authorizer.group('').resource('configmaps').namespace(request.namespace).check('get').allowed()"
{{- end -}}

{{/* The Secret holding the Alertmanager webhook's bearer token (key `token`). */}}
{{- define "rollguard.alertWebhookSecret" -}}
{{- default (printf "%s-alert-webhook" (include "rollguard.fullname" .)) .Values.alertWebhook.existingSecret -}}
{{- end }}
