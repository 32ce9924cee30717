package service

import (
	"errors"
	"fmt"
	"os"
	"strings"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// criOptionsType is the type URL of the options containerd's CRI plugin
// sends every runtime whose runtime_type is not io.containerd.runc.v2: the
// runtime table's options section as TOML (ConfigBody), or the path of a
// file holding it (ConfigPath).
const criOptionsType = "runtimeoptions.v1.Options"

// decodeCRIOptions reads runc's options (BinaryName, SystemdCgroup, ...)
// from the TOML that CRI passes on. containerd 2.x marshals the runtime
// table's options section (a map) with go-toml/v2 into ConfigBody unless
// the section sets ConfigPath; containerd 1.6 decodes the section into
// runtimeoptions.v1.Options itself, so its body is empty and only a
// ConfigPath can carry options. An empty document means the shim's
// defaults.
func decodeCRIOptions(value []byte) (ociruntime.Options, error) {
	var o runtimeoptions.Options
	if err := proto.Unmarshal(value, &o); err != nil {
		return ociruntime.Options{}, fmt.Errorf("decode CRI runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	body, source := o.ConfigBody, "ConfigBody"
	if len(body) == 0 && o.ConfigPath != "" {
		data, err := os.ReadFile(o.ConfigPath)
		if errors.Is(err, os.ErrNotExist) {
			return ociruntime.Options{}, fmt.Errorf("runtime options ConfigPath %q: %w", o.ConfigPath, errdefs.ErrNotFound)
		}
		if err != nil {
			return ociruntime.Options{}, fmt.Errorf("runtime options ConfigPath %q: %v: %w", o.ConfigPath, err, errdefs.ErrInvalidArgument)
		}
		body, source = data, fmt.Sprintf("ConfigPath %q", o.ConfigPath)
	}
	opts, err := optionsFromTOML(body)
	if err != nil {
		return ociruntime.Options{}, fmt.Errorf("runtime options %s: %w", source, err)
	}
	return opts, nil
}

// optionsFromTOML decodes a TOML document of runc's options. go-toml
// parses it (any TOML: sub-tables, arrays, inline tables, hex integers,
// multi-line strings); each top-level key that names an option (see
// optionField) sets it, and every other key is ignored, as containerd's
// go-toml decoding into runc's Options ignores keys it has no field for.
// A known key with a value of the wrong type, or two keys naming the same
// option, is an invalid argument: go-toml would leave which one wins to
// the order of a map.
func optionsFromTOML(doc []byte) (ociruntime.Options, error) {
	var o ociruntime.Options
	var values map[string]any
	if err := toml.Unmarshal(doc, &values); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return o, fmt.Errorf("TOML line %d column %d: %v: %w", row, col, err, errdefs.ErrInvalidArgument)
		}
		return o, fmt.Errorf("TOML: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	seen := map[string]string{} // option field -> the key that set it
	for key, v := range values {
		field := optionField(key)
		if field == "" {
			continue
		}
		if prev, dup := seen[field]; dup {
			return o, fmt.Errorf("keys %q and %q both set %s: %w", min(prev, key), max(prev, key), field, errdefs.ErrInvalidArgument)
		}
		seen[field] = key
		if err := setOption(&o, field, v); err != nil {
			return o, fmt.Errorf("%s: %w", key, err)
		}
	}
	return o, nil
}

// optionField returns the field of io.containerd.runc.v1.Options that key
// names, or "" for none. A key is the Go field name, matched without
// regard to case as containerd's go-toml matches it when CRI decodes a
// runtime table for io.containerd.runc.v2, or the protobuf field name
// (snake_case), also in any case. TaskApiAddress and TaskApiVersion
// (deprecated in the proto) are not read: the shim ignores them in the
// protobuf form too.
func optionField(key string) string {
	switch strings.ToLower(key) {
	case "binaryname", "binary_name":
		return "BinaryName"
	case "root":
		return "Root"
	case "shimcgroup", "shim_cgroup":
		return "ShimCgroup"
	case "criuimagepath", "criu_image_path":
		return "CriuImagePath"
	case "criuworkpath", "criu_work_path":
		return "CriuWorkPath"
	case "systemdcgroup", "systemd_cgroup":
		return "SystemdCgroup"
	case "nopivotroot", "no_pivot_root":
		return "NoPivotRoot"
	case "nonewkeyring", "no_new_keyring":
		return "NoNewKeyring"
	case "iouid", "io_uid":
		return "IoUid"
	case "iogid", "io_gid":
		return "IoGid"
	case "engine":
		// The shim's own key, not runc's: ociruntime.Options.Engine.
		return "Engine"
	}
	return ""
}

// setOption sets o's field (as optionField names it) to the TOML value v,
// which must have the field's type.
func setOption(o *ociruntime.Options, field string, v any) error {
	switch field {
	case "BinaryName":
		return setString(&o.BinaryName, v)
	case "Root":
		return setString(&o.Root, v)
	case "ShimCgroup":
		return setString(&o.ShimCgroup, v)
	case "CriuImagePath":
		return setString(&o.CriuImagePath, v)
	case "CriuWorkPath":
		return setString(&o.CriuWorkPath, v)
	case "SystemdCgroup":
		return setBool(&o.SystemdCgroup, v)
	case "NoPivotRoot":
		return setBool(&o.NoPivotRoot, v)
	case "NoNewKeyring":
		return setBool(&o.NoNewKeyring, v)
	case "IoUid":
		return setID(&o.IoUID, v)
	case "IoGid":
		return setID(&o.IoGID, v)
	case "Engine":
		if err := setString(&o.Engine, v); err != nil {
			return err
		}
		if !ociruntime.ValidEngine(o.Engine) {
			return fmt.Errorf("engine %q, want %q or %q: %w", o.Engine, ociruntime.EngineRunc, ociruntime.EngineLibcontainer, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	return fmt.Errorf("unknown option %s: %w", field, errdefs.ErrInvalidArgument)
}

func setString(dst *string, v any) error {
	s, ok := v.(string)
	if !ok {
		return typeError(v, "a string")
	}
	*dst = s
	return nil
}

func setBool(dst *bool, v any) error {
	b, ok := v.(bool)
	if !ok {
		return typeError(v, "a boolean")
	}
	*dst = b
	return nil
}

// setID sets a uid or gid: a TOML integer (go-toml gives int64) that fits
// uint32, as containerd's go-toml decoding into runc's uint32 field
// requires (a float is refused there too).
func setID(dst *uint32, v any) error {
	n, ok := v.(int64)
	if !ok {
		return typeError(v, "an integer")
	}
	if n < 0 || n > 1<<32-1 {
		return fmt.Errorf("%d is not a uid or gid (0 to %d): %w", n, uint32(1<<32-1), errdefs.ErrInvalidArgument)
	}
	*dst = uint32(n)
	return nil
}

// typeError says what TOML type a value had where want was expected.
func typeError(v any, want string) error {
	var got string
	switch v.(type) {
	case string:
		got = "a string"
	case bool:
		got = "a boolean"
	case int64:
		got = "an integer"
	case float64:
		got = "a float"
	case []any:
		got = "an array"
	case map[string]any:
		got = "a table"
	default:
		got = fmt.Sprintf("a %T", v) // the date and time types
	}
	return fmt.Errorf("is %s, want %s: %w", got, want, errdefs.ErrInvalidArgument)
}
