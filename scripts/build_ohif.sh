#!/usr/bin/env bash
# Optional install step: the OHIF viewer (v3, MIT licence) served by Pulmo at /ohif/ on the same
# origin, reading Pulmo's studies (with their SEG/SR/SC result series) from /dicomweb.
#
# Fetches the prebuilt viewer of the pinned npm package @ohif/app (its dist/ folder, the same
# build as viewer.ohif.org), checks the tarball against the pinned sha512, and copies it into
# DEST (default pulmo/web/ohif, or $PULMO_OHIF_DIR — `pulmo serve` reads the same variable), then:
#   - moves it from / to /ohif/ (webpack public path, index.html links, the font in the CSS);
#   - replaces the inline scripts of index.html by a file (the CSP of /ohif allows no inline script);
#   - leaves out the service worker, source maps, the onnxruntime (AI segmentation tools) and the
#     slide-microscopy viewer (about 150 MB, none of it needed for CT + SEG);
#   - writes app-config.js: one data source, DICOMweb at this origin's /dicomweb (authorised by
#     the signed-in browser's session cookie), no external URL.
# The viewer is about 50 MB, too large to ship in the Python package: run this script once per
# installation (it needs npm and the npm registry; the result works offline). Re-running replaces
# DEST. Usage: scripts/build_ohif.sh [DEST]
set -euo pipefail

VERSION="3.13.2"
INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-${PULMO_OHIF_DIR:-$REPO/pulmo/web/ohif}}"
CACHE="${OHIF_CACHE:-$REPO/.cache/ohif}"
BASE="/ohif/"

command -v npm >/dev/null || { echo "build_ohif: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$CACHE"
TGZ="$CACHE/ohif-app-$VERSION.tgz"
if [ ! -f "$TGZ" ]; then
    (cd "$CACHE" && npm pack "@ohif/app@$VERSION" --silent >/dev/null)
fi
GOT="sha512-$(openssl dgst -sha512 -binary "$TGZ" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then
    echo "build_ohif: $TGZ does not match the pinned sha512; delete it and run again" >&2
    exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
tar xzf "$TGZ" -C "$WORK"
SRC="$WORK/package/dist"
STAGE="$WORK/ohif"
mkdir -p "$STAGE"
(cd "$SRC" && tar cf - --exclude='./ort' --exclude='./dicom-microscopy-viewer' --exclude='*.map' \
    --exclude='./sw.js' --exclude='./init-service-worker.js' --exclude='./google.js' --exclude='./_headers' \
    --exclude='./_redirects' --exclude='./serve.json' --exclude='./silent-refresh.html' \
    --exclude='./oidc-client.min.js' --exclude='./app-config.js' .) | (cd "$STAGE" && tar xf -)
cp "$WORK/package/LICENSE" "$STAGE/LICENSE-OHIF.txt"

python3 - "$STAGE" "$BASE" "$VERSION" <<'PY'
import pathlib, re, sys

stage, base, version = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
# webpack/rspack public path of the main bundle and of the worker bundles
n = 0
for js in stage.glob("*.js"):
    text = js.read_text(encoding="utf-8")
    if '__webpack_require__.p = "/";' in text:
        js.write_text(text.replace('__webpack_require__.p = "/";', f'__webpack_require__.p = "{base}";'),
                      encoding="utf-8")
        n += 1
if n == 0:
    sys.exit("build_ohif: no webpack public path found; the package layout changed")
for css in stage.glob("*.css"):
    text = css.read_text(encoding="utf-8")
    css.write_text(re.sub(r"url\(/(?!/)", f"url({base}", text), encoding="utf-8")

index = stage / "index.html"
html = index.read_text(encoding="utf-8")
html = re.sub(r"<script[^>]*init-service-worker\.js[^>]*></script>", "", html)
html = re.sub(r"<script>[^<]*</script>", "", html)            # inline scripts: moved to pulmo-init.js
html = re.sub(r'<link rel="(manifest|apple-touch-startup-image|yandex-tableau-widget)"[^>]*>', "", html)
html = re.sub(r'<meta name="msapplication-[^>]*>', "", html)
html = re.sub(r'((?:href|src)=")/(?!/)', rf"\g<1>{base}", html)
html = html.replace(f'<script rel="preload" as="script" src="{base}app-config.js"></script>',
                    f'<script src="{base}pulmo-init.js"></script>'
                    f'<script src="{base}app-config.js"></script>')
if "pulmo-init.js" not in html or "<script>" in html or 'src="/' in html.replace(f'src="{base}', ""):
    sys.exit("build_ohif: index.html did not have the expected shape")
index.write_text(html, encoding="utf-8")

(stage / "pulmo-init.js").write_text(
    f'window.PUBLIC_URL = "{base}";\n'
    "function browserImportFunction(n) { return import(n); }\n", encoding="utf-8")

(stage / "app-config.js").write_text("""/** OHIF viewer configuration written by Pulmo's scripts/build_ohif.sh (@ohif/app %(version)s).
 * One data source: Pulmo's DICOMweb on this origin (the signed-in session's cookie authorises it). */
window.config = {
  name: 'pulmo',
  routerBasename: '%(router)s',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 20, thumbnail: 4, prefetch: 8 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'pulmo',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pulmo',
      configuration: {
        friendlyName: 'Pulmo DICOMweb',
        name: 'pulmo',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: false,
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
""" % {"version": version, "router": base.rstrip("/")}, encoding="utf-8")
PY

# never committed by accident: the folder ignores itself
printf '*\n' > "$STAGE/.gitignore"
printf '@ohif/app %s (MIT, see LICENSE-OHIF.txt), installed by scripts/build_ohif.sh\n' "$VERSION" > "$STAGE/VERSION.txt"

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -r "$STAGE" "$DEST"
echo "OHIF $VERSION installed in $DEST ($(du -sh "$DEST" | cut -f1)); pulmo serve offers it at /ohif/"
