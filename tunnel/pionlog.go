package tunnel

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs adapts pion's leveled loggers to slog. pion is chatty and its
// errors are mostly not actionable for an operator (a dropped STUN message,
// a closed socket during teardown), so its Error and Warn lines become slog
// debug lines and Info, Debug and Trace are dropped; this package logs what
// matters itself.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) emit(msg string) { l.log.Debug(msg) }

func (l pionLogger) emitf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (pionLogger) Trace(string)                   {}
func (pionLogger) Tracef(string, ...any)          {}
func (pionLogger) Debug(string)                   {}
func (pionLogger) Debugf(string, ...any)          {}
func (pionLogger) Info(string)                    {}
func (pionLogger) Infof(string, ...any)           {}
func (l pionLogger) Warn(msg string)              { l.emit(msg) }
func (l pionLogger) Warnf(f string, args ...any)  { l.emitf(f, args...) }
func (l pionLogger) Error(msg string)             { l.emit(msg) }
func (l pionLogger) Errorf(f string, args ...any) { l.emitf(f, args...) }
