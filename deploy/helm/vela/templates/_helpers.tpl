{{/* Names, labels and the pieces every role's config shares. */}}

{{- define "vela.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vela.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vela.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vela.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "store") */}}
{{- define "vela.selector" -}}
app.kubernetes.io/name: {{ include "vela.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vela.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "vela.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vela.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vela.authSecret" -}}
{{- default (printf "%s-auth" (include "vela.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{/* A Secret of receipt key files the proxies mount: the one named in the values, or the one
charts before managed keys made (kept on upgrade, so handles it signed still verify); empty
when neither exists: the controllers' managed keys sign (ADR 0030). */}}
{{- define "vela.receiptSecret" -}}
{{- if .Values.receiptKeys.existingSecret -}}
{{- .Values.receiptKeys.existingSecret -}}
{{- else -}}
{{- $legacy := printf "%s-receipt-keys" (include "vela.fullname" .) -}}
{{- if lookup "v1" "Secret" .Release.Namespace $legacy -}}
{{- $legacy -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- define "vela.metadataSecret" -}}
{{- default (printf "%s-metadata-key" (include "vela.fullname" .)) .Values.metadataKeySecret -}}
{{- end -}}
{{- define "vela.tierSecret" -}}
{{- default (printf "%s-tier" (include "vela.fullname" .)) .Values.tier.existingSecret -}}
{{- end -}}
{{- define "vela.tierCredentials" -}}
{{- if or .Values.tier.existingSecret .Values.tier.accessKeyId -}}true{{- end -}}
{{- end -}}

{{/* Whether the nodes create their Raft groups on this start (cluster.bootstrap). */}}
{{- define "vela.bootstrap" -}}
{{- $b := toString .Values.cluster.bootstrap -}}
{{- if eq $b "auto" -}}{{ .Release.IsInstall }}{{- else if eq $b "true" -}}true{{- else if eq $b "false" -}}false{{- else -}}
{{- fail (printf "cluster.bootstrap must be auto, true or false, not %q" $b) -}}
{{- end -}}
{{- end -}}

{{/* A TOML string. */}}
{{- define "vela.tomlString" -}}
{{- . | toString | toJson -}}
{{- end -}}

{{/* Extra settings of a role's section, as TOML key = value lines. */}}
{{- define "vela.extraToml" -}}
{{- range $k, $v := . }}
{{ $k }} = {{ if kindIs "string" $v }}{{ toJson $v }}{{ else }}{{ $v }}{{ end }}
{{- end }}
{{- end -}}

{{/* The [cluster] section, the same in every role's file, and the sections every role shares. */}}
{{- define "vela.commonToml" -}}
{{- $full := include "vela.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $domain := .Values.cluster.clusterDomain -}}
[log]
level = {{ include "vela.tomlString" .Values.telemetry.logLevel }}
format = {{ include "vela.tomlString" .Values.telemetry.logFormat }}
{{- include "vela.otlpToml" . }}

[cluster]
shards = [{{ join ", " .Values.cluster.shards }}]
{{- if include "vela.receiptSecret" . }}
receipt_keys_dir = "/etc/vela/receipt-keys"
{{- if not .Values.receiptKeys.existingSecret }}
# Key files of an earlier chart: they verify what they signed; managed keys sign (ADR 0030).
receipt_keys_verify_only = true
{{- end }}
{{- with .Values.receiptKeys.signingKey }}
receipt_signing_key = {{ . }}
{{- end }}
{{- end }}
{{- range $i, $_ := until (int .Values.controller.replicas) }}

[[cluster.controllers]]
id = {{ add $i 1 }}
addr = "{{ $full }}-controller-{{ $i }}.{{ $full }}-controller-headless.{{ $ns }}.svc.{{ $domain }}:{{ $.Values.controller.grpcPort }}"
{{- end }}
{{- range $i, $_ := until (int .Values.store.replicas) }}

[[cluster.stores]]
id = {{ add $i 1 }}
addr = "{{ $full }}-store-{{ $i }}.{{ $full }}-store-headless.{{ $ns }}.svc.{{ $domain }}:{{ $.Values.store.grpcPort }}"
{{- end }}
{{- if include "vela.clusterTlsSecret" . }}

[cluster.tls]
ca_file = "/etc/vela/cluster-tls/ca.pem"
cert_file = "/etc/vela/cluster-tls/tls.crt"
key_file = "/etc/vela/cluster-tls/tls.key"
{{- end }}
{{- end -}}

{{/* The [tier] section (store nodes and standalone). */}}
{{- define "vela.tierToml" -}}
{{- if .Values.tier.url }}

[tier]
url = {{ include "vela.tomlString" .Values.tier.url }}
{{- with .Values.tier.endpoint }}
endpoint = {{ include "vela.tomlString" . }}
{{- end }}
{{- with .Values.tier.region }}
region = {{ include "vela.tomlString" . }}
{{- end }}
virtual_hosted_style = {{ .Values.tier.virtualHostedStyle }}
{{- end }}
{{- end -}}

{{/* Environment every Vela container gets: credentials from Secrets. */}}
{{- define "vela.tierEnv" -}}
{{- if include "vela.tierCredentials" . }}
- name: VELA_TIER__ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "vela.tierSecret" . }}, key: access_key_id}}
- name: VELA_TIER__SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "vela.tierSecret" . }}, key: secret_access_key}}
{{- end }}
{{- end -}}

{{- define "vela.initUserEnv" -}}
{{- if .Values.auth.enabled }}
- name: VELA_AUTH__INIT_USER
  valueFrom: {secretKeyRef: {name: {{ include "vela.authSecret" . }}, key: user}}
- name: VELA_AUTH__INIT_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "vela.authSecret" . }}, key: password}}
{{- end }}
{{- end -}}

{{/* Probes on the HTTP side door. */}}
{{- define "vela.probes" -}}
startupProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 2
  failureThreshold: 150
livenessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /ready, port: http}
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* The [telemetry.otlp] section, when an endpoint is set. */}}
{{- define "vela.otlpToml" -}}
{{- if .Values.telemetry.otlpEndpoint }}

[telemetry.otlp]
endpoint = {{ include "vela.tomlString" .Values.telemetry.otlpEndpoint }}
protocol = {{ include "vela.tomlString" .Values.telemetry.otlpProtocol }}
{{- if .Values.telemetry.otlpCaConfigMap }}
ca_file = "/etc/vela/otlp-ca/ca.pem"
{{- end }}
{{- end }}
{{- end -}}

{{- define "vela.otlpCaVolume" -}}
{{- if .Values.telemetry.otlpCaConfigMap }}
- name: otlp-ca
  configMap: {name: {{ .Values.telemetry.otlpCaConfigMap }}}
{{- end }}
{{- end -}}
{{- define "vela.otlpCaMount" -}}
{{- if .Values.telemetry.otlpCaConfigMap }}
- {name: otlp-ca, mountPath: /etc/vela/otlp-ca, readOnly: true}
{{- end }}
{{- end -}}

{{/* The Secret with the cluster's TLS files (ca.pem, tls.crt, tls.key): the one named in the
values, or the one the chart makes; empty when mutual TLS between the pods is off. */}}
{{- define "vela.clusterTlsSecret" -}}
{{- if and (ne .Values.mode "standalone") .Values.cluster.tls.enabled -}}
{{- default (printf "%s-cluster-tls" (include "vela.fullname" .)) .Values.cluster.tls.secretName -}}
{{- end -}}
{{- end -}}

{{/* The controllers' Service, as KEDA dials it (host part; its certificate must name it). */}}
{{- define "vela.controllerServiceHost" -}}
{{- printf "%s-controller.%s.svc.%s" (include "vela.fullname" .) .Release.Namespace .Values.cluster.clusterDomain -}}
{{- end -}}

{{- define "vela.clusterTlsVolume" -}}
{{- with include "vela.clusterTlsSecret" . }}
- name: cluster-tls
  secret: {secretName: {{ . }}}
{{- end }}
{{- end -}}
{{- define "vela.clusterTlsMount" -}}
{{- if include "vela.clusterTlsSecret" . }}
- {name: cluster-tls, mountPath: /etc/vela/cluster-tls, readOnly: true}
{{- end }}
{{- end -}}
