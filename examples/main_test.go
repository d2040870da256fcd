// A private registry for a Go package's tests: started once in TestMain,
// with known images, stopped when the tests end.
package registry_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
)

var registryURL string

func TestMain(m *testing.M) {
	cmd := exec.Command("berth", "serve", "--ephemeral", "--listen", "127.0.0.1:0",
		"--ready-json", "--exit-with-parent", "--preload", "fixtures/layouts/app")
	cmd.Stderr = os.Stderr // why it would not start
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	var ready struct{ URL string }
	line, _ := bufio.NewReader(out).ReadBytes('\n')
	if err := json.Unmarshal(line, &ready); err != nil {
		panic(err)
	}
	registryURL = ready.URL
	code := m.Run()
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	os.Exit(code)
}
