#!/usr/bin/env bash
# Re-vendor the API documentation UIs served at /schema (Swagger UI, ReDoc) from the npm registry.
# Usage: bash app/docs_assets/update.sh [SWAGGER_UI_VERSION] [REDOC_VERSION]; then commit the files.
set -euo pipefail
cd "$(dirname "$0")"
swagger="${1:-5.35.0}"
redoc="${2:-2.5.4}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$swagger" "redoc@$redoc" >/dev/null)
tar -xzf "$work/swagger-ui-dist-$swagger.tgz" -C "$work" && mv "$work/package" "$work/swagger"
tar -xzf "$work/redoc-$redoc.tgz" -C "$work" && mv "$work/package" "$work/redoc"
cp "$work/swagger/"{swagger-ui-bundle.js,swagger-ui-standalone-preset.js,swagger-ui.css,favicon-32x32.png} .
cp "$work/swagger/LICENSE" LICENSE.swagger-ui && cp "$work/swagger/NOTICE" NOTICE.swagger-ui
cp "$work/redoc/bundles/redoc.standalone.js" . && cp "$work/redoc/LICENSE" LICENSE.redoc
cp "$work/redoc/bundles/redoc.standalone.js.LICENSE.txt" redoc.standalone.js.LICENSE.txt
# Drop source-map references: the maps are not vendored.
sed -i '/^\/\/# sourceMappingURL=/d; s#/\*\# sourceMappingURL=[^*]*\*/##' ./*.js ./*.css
printf 'swagger-ui-dist %s\nredoc %s\n' "$swagger" "$redoc" > VERSIONS
echo "vendored swagger-ui-dist $swagger and redoc $redoc"
